"""Bad input files and templates end in one line that names the file (and the field or param),
through the stage scripts and the `recpipe` CLI alike: never a traceback, never partial output."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import params_dict, source
from test_text_instructions_sample import run_data_stages
from typer.testing import CliRunner

from recpipe import pipeline
from recpipe.cli import app

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
    for src, dst in (("tables", "tables/ml-100k"), ("text", "text/ml-100k"), ("instructions", "instructions"), ("sample", "sample")):
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
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("stage, broken, made_by, output", [
    ("sample", "data/instructions/samples.parquet", "instructions", "data/sample"),
    ("instructions", "data/text/ml-100k/histories.parquet", "textualize", "data/instructions/samples.parquet"),  # a lazy scan
    ("instructions", "data/text/ml-100k/items.parquet", "textualize", "data/instructions/samples.parquet"),
    ("textualize", "data/tables/ml-100k/interactions.parquet", "ingest", "data/text/ml-100k"),  # a lazy scan
])  # fmt: skip
def test_a_truncated_parquet_file_fails_its_stage_in_one_line(copy, stage, broken, made_by, output):
    truncate(copy / broken)
    out = copy / output
    shutil.rmtree(out) if out.is_dir() else out.unlink()
    result = run_stage(stage, copy, *(["ml-100k"] if stage == "textualize" else []))
    assert result.returncode == 1, result.stderr
    last = one_line(result.stderr.strip().splitlines()[-1])
    assert last.startswith(f"error: {stage}: {broken}: not a readable parquet file (") and last.endswith(f"(the {made_by} stage writes it)")
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
    assert one_line(result.output) == "error: data/instructions/samples.parquet: not found (the instructions stage writes it)"


def test_ingest_before_download_names_the_stage_that_writes_its_input(copy, monkeypatch):
    monkeypatch.chdir(copy)
    result = CliRunner().invoke(app, ["ingest"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert one_line(result.output) == "error: data/raw/ml-100k/source.json: not found (the download stage writes it)"


# params.yaml and datasets.yaml through the CLI.


@pytest.fixture
def nothing_runs(monkeypatch):
    ran = []
    monkeypatch.setattr(pipeline, "STEPS", {name: (lambda *a, name=name: ran.append(name)) for name in pipeline.STEPS})
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
