"""Bad input files and templates end in one line that names the file (and the field or param),
through the stage scripts and the `recpipe` CLI alike: never a traceback, never partial output."""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import params_dict, source
from recpipe import RecpipeError, cli
from recpipe.cli import app
from recpipe.params.instructions import InstructionsParams
from test_text_instructions_sample import run_data_stages

ROOT = Path(__file__).resolve().parents[1]


def one_line(message: str) -> str:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    return message.strip()


# Truncated parquet files, read by the stage scripts and by the CLI.


@pytest.fixture(scope="module")
def project(archives, tmp_path_factory) -> Path:
    """A project folder: params.yaml, datasets.yaml and the data stages' outputs under data/."""
    built, root = tmp_path_factory.mktemp("built"), tmp_path_factory.mktemp("project")
    run_data_stages(archives["atomic"], built)
    for src, dst in (
        ("tables", "tables/ml-100k"),
        ("text", "text/ml-100k"),
        ("instructions", "instructions"),
        ("sample", "sample"),
    ):
        (root / "data" / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(built / src, root / "data" / dst)
    params = params_dict([source("atomic", archives["atomic"])])
    (root / "datasets.yaml").write_text(yaml.safe_dump(params.pop("registry")))
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.fixture
def copy(project, tmp_path) -> Path:
    shutil.copytree(project, tmp_path / "p")
    return tmp_path / "p"


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def run_stage(stage: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args], cwd=cwd, capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize(
    "stage, broken, made_by, output",
    [
        ("sample", "data/instructions/samples.parquet", "instructions", "data/sample"),
        (
            "instructions",
            "data/text/ml-100k/histories.parquet",
            "textualize",
            "data/instructions/samples.parquet",
        ),  # a lazy scan
        ("instructions", "data/text/ml-100k/items.parquet", "textualize", "data/instructions/samples.parquet"),
        ("textualize", "data/tables/ml-100k/interactions.parquet", "ingest", "data/text/ml-100k"),  # a lazy scan
    ],
)
def test_a_truncated_parquet_file_fails_its_stage_in_one_line(copy, stage, broken, made_by, output):
    truncate(copy / broken)
    out = copy / output
    shutil.rmtree(out) if out.is_dir() else out.unlink()
    result = run_stage(stage, copy, *(["ml-100k"] if stage == "textualize" else []))
    assert result.returncode == 1, result.stderr
    last = one_line(result.stderr.strip().splitlines()[-1])
    assert last.startswith(f"error: {stage}: {broken}: not a readable parquet file (") and last.endswith(
        f"(the {made_by} stage writes it)"
    )
    assert "Traceback" not in result.stderr and not out.exists()


def test_a_truncated_parquet_file_through_the_cli_is_one_line(copy, monkeypatch):
    monkeypatch.chdir(copy)
    truncate(copy / "data/text/ml-100k/items.parquet")
    result = CliRunner().invoke(app, ["instructions"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert one_line(result.output).startswith("error: data/text/ml-100k/items.parquet: not a readable parquet file (")


@pytest.mark.parametrize("broken", ["data/tables/ml-100k/interactions.parquet", "data/instructions/samples.parquet"])
def test_stats_on_a_truncated_parquet_file_is_one_line(copy, monkeypatch, broken):
    monkeypatch.chdir(copy)
    truncate(copy / broken)
    result = CliRunner().invoke(app, ["stats"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert one_line(result.output).startswith(f"error: {broken}: not a readable parquet file (")


def test_a_missing_input_through_the_cli_names_the_stage_that_writes_it(copy, monkeypatch):
    monkeypatch.chdir(copy)
    (copy / "data/instructions/samples.parquet").unlink()
    result = CliRunner().invoke(app, ["sample"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert (
        one_line(result.output)
        == "error: data/instructions/samples.parquet: not found (the instructions stage writes it)"
    )


def test_ingest_before_download_names_the_stage_that_writes_its_input(copy, monkeypatch):
    monkeypatch.chdir(copy)
    result = CliRunner().invoke(app, ["ingest"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert one_line(result.output) == "error: data/raw/ml-100k/source.json: not found (the download stage writes it)"


# params.yaml and datasets.yaml through the CLI.


@pytest.fixture
def nothing_runs(monkeypatch):
    ran = []
    steps = {
        name: SimpleNamespace(FOR_EACH=step.FOR_EACH, run=lambda *a, name=name: ran.append(name))
        for name, step in cli.STEPS.items()
    }
    monkeypatch.setattr(cli, "STEPS", steps)
    return ran


@pytest.mark.parametrize("name", ["params.yaml", "datasets.yaml"])
def test_a_yaml_syntax_error_is_one_line_naming_the_file(copy, monkeypatch, nothing_runs, name):
    monkeypatch.chdir(copy)
    (copy / name).write_text("seed: 0\nsample: {k: 3\n")
    result = CliRunner().invoke(app, ["sample"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert one_line(result.output).startswith(f"error: {name}: not valid YAML (")
    assert not nothing_runs


def test_an_empty_params_file_is_an_error_not_the_defaults(copy, monkeypatch, nothing_runs):
    monkeypatch.chdir(copy)
    (copy / "params.yaml").write_text("# all commented out\n")
    result = CliRunner().invoke(app, ["sample"])
    assert result.exit_code == 1, result.output
    assert one_line(result.output) == "error: params.yaml: the file is empty (expected a mapping)"
    assert not nothing_runs


# Templates: plain named fields only.

TALLREC = (ROOT / "recpipe/templates/tallrec.yaml").read_text()
INPUT = "Movies the user liked: {liked}"


@pytest.mark.parametrize(
    "key, old, field",
    [
        ("input", INPUT, "{target.__class__.__mro__}"),
        ("input", INPUT, "{liked[0]}"),
        ("input", INPUT, "{target!r}"),
        ("input", INPUT, "{n_liked:>3}"),
        ("input", INPUT, "{}"),
        ("item", '"{name}"', "{name.__class__}"),
    ],
)
def test_a_template_field_that_is_not_a_plain_name_is_one_line(project, tmp_path, key, old, field):
    from recpipe.tallrec.instructions import instructions

    bad = tmp_path / "bad.yaml"
    assert old in TALLREC
    bad.write_text(
        TALLREC.replace(old, old.replace("{name}", "{name}" + field) if key == "item" else old + " " + field)
    )
    params = InstructionsParams(pool_size=300, history_len=5).model_copy(update={"template": str(bad)})
    with pytest.raises(RecpipeError) as e:
        instructions(project / "data/text/ml-100k", tmp_path / "samples.parquet", params)
    message = one_line(str(e.value))
    assert message.startswith(f"{bad}: '{key}': placeholder {field} is not a plain name")
    assert not (tmp_path / "samples.parquet").exists()


@pytest.mark.parametrize(
    "text, says",
    [
        (TALLREC.replace(INPUT, INPUT + " {rating}"), "'input' has unknown placeholders ['rating']"),
        (
            TALLREC.replace(INPUT, INPUT + " {"),
            "'input': a { or } that opens or closes no placeholder (write {{ or }} for a literal brace)",
        ),
        (TALLREC.replace('answer_no: "No."', 'answer_no: "No.'), "not valid YAML ("),
    ],
)
def test_other_bad_templates_are_one_line(project, tmp_path, text, says):
    from recpipe.tallrec.instructions import instructions

    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    params = InstructionsParams(pool_size=300, history_len=5).model_copy(update={"template": str(bad)})
    with pytest.raises(RecpipeError) as e:
        instructions(project / "data/text/ml-100k", tmp_path / "samples.parquet", params)
    assert one_line(str(e.value)).startswith(f"{bad}: {says}")


def test_literal_text_in_a_template_may_hold_braces(project, tmp_path):
    from recpipe.tallrec.instructions import instructions

    good = tmp_path / "braces.yaml"
    good.write_text(TALLREC.replace("You are a movie recommender.", "You are a movie recommender {v2}."))
    params = InstructionsParams(pool_size=300, history_len=5).model_copy(update={"template": str(good)})
    samples = instructions(project / "data/text/ml-100k", tmp_path / "samples.parquet", params)
    assert samples["prompt"].str.contains("recommender {v2}.", literal=True).all()


def test_p5_and_text_templates_take_plain_fields_only(tmp_path):
    from recpipe.p5.families import load_templates
    from recpipe.templates import load_template

    p5 = (ROOT / "recpipe/templates/p5.yaml").read_text()
    bad = tmp_path / "p5.yaml"
    bad.write_text(p5.replace("will {user} give {item}?", "will {user} give {item!r}?", 1))
    with pytest.raises(RecpipeError) as e:
        load_templates(str(bad), ["rating"])
    assert one_line(str(e.value)).startswith(
        f"{bad}: rating.seen[0].prompt: placeholder {{item!r}} is not a plain name"
    )
    text = tmp_path / "text.yaml"
    text.write_text('item_name: "{title.__class__}"\nitem_text: "{name}."\nuser_text: "A user."\nmissing: unknown\n')
    with pytest.raises(RecpipeError) as e:
        load_template(str(text), {"item_name": {"title"}, "item_text": {"name"}, "user_text": set(), "missing": None})
    assert one_line(str(e.value)).startswith(
        f"{text}: 'item_name': placeholder {{title.__class__}} is not a plain name"
    )


# GGUF model files (model.name can be a local .gguf file).


def write_gguf(path: Path) -> Path:
    """A small but well-formed GGUF file: a header, metadata and one float tensor."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((64, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def bad_gguf(folder: Path, kind: str) -> Path:
    whole = write_gguf(folder / "whole.gguf").read_bytes()
    path = folder / f"{kind}.gguf"
    if kind == "truncated":  # the tensor data cut short
        path.write_bytes(whole[: len(whole) - 100])
    elif kind == "header-only":  # magic, version, tensor and metadata counts: nothing after
        path.write_bytes(whole[:24])
    else:
        path.write_text("not a model\n" * 10)
    return path


@pytest.mark.parametrize(
    "kind, says",
    [
        ("truncated", "is a truncated or damaged GGUF file"),
        ("header-only", "is a truncated or damaged GGUF file"),
        ("text", "is not a GGUF file"),
    ],
)
def test_a_broken_gguf_model_is_one_line_naming_the_file(tmp_path, monkeypatch, kind, says):
    from recpipe.model import load as model_load

    monkeypatch.setattr(model_load, "CACHE", tmp_path / "cache")
    path = bad_gguf(tmp_path, kind)
    with pytest.raises(RecpipeError) as e:
        model_load.load(str(path))
    assert one_line(str(e.value)).startswith(f"model.name: {path} {says} (")
    assert not (tmp_path / "cache" / "dequantized").exists()


def test_a_gguf_file_transformers_cannot_make_a_model_of_is_one_line(tmp_path, monkeypatch):
    from recpipe.model import load as model_load

    monkeypatch.setattr(model_load, "CACHE", tmp_path / "cache")
    path = write_gguf(tmp_path / "no-tokenizer.gguf")  # well-formed, but has no tokenizer
    with pytest.raises(RecpipeError) as e:
        model_load.load(str(path))
    assert one_line(str(e.value)).startswith(f"model.name: transformers cannot load the GGUF model {path} (")
