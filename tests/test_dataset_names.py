"""A dataset's name becomes a word of a shell command (dvc.yaml) and a folder (data/raw/<name>):
only identifiers are names, and none reaches the shell or a folder outside its own."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import params_dict, source
from recpipe import RecpipeError
from recpipe.cli import STEPS, app
from recpipe.params import schema as params
from recpipe.params.core import dataset_name

ROOT = Path(__file__).resolve().parents[1]
RULE = "must use only ASCII letters, digits, '.', '_' and '-', and not start with '.'"
BAD = ["ml; touch marker; echo", "ml$(touch marker)", "../../../trav", "a/b", "..", ".hidden", "", "ml\nx", "é"]


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("key", ["datasets", "dataset", "evaluate.dataset", "p5.datasets", "recsysllm.datasets"])
def test_a_bad_name_in_params_is_one_line_naming_the_key_and_the_rule(tmp_path, key, name):
    data = params_dict([source("grouplens", tmp_path / "x.zip")])
    registry = data.pop("registry")
    section, _, field = key.rpartition(".")
    value = [name] if field == "datasets" else name
    (data.setdefault(section, {}) if section else data)[field] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "datasets.yaml").write_text(yaml.safe_dump(registry))
    with pytest.raises(RecpipeError) as e:
        params.load(tmp_path / "params.yaml")
    where = f"{key}.0" if field == "datasets" else key
    assert f"{tmp_path / 'params.yaml'}: {where}: dataset name {name!r} {RULE}" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", BAD)
def test_a_bad_name_in_the_registry_is_one_line_naming_the_file_and_the_rule(tmp_path, name):
    data = params_dict([source("grouplens", tmp_path / "x.zip")])
    registry = {**data.pop("registry"), name: {"sources": [source("grouplens", tmp_path / "x.zip")]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))  # not even listed in `datasets`
    (tmp_path / "datasets.yaml").write_text(yaml.safe_dump(registry))
    with pytest.raises(RecpipeError) as e:
        params.load(tmp_path / "params.yaml")
    assert str(e.value) == f"{tmp_path / 'datasets.yaml'}: dataset name {name!r} {RULE}"


def test_good_names_pass():
    for name in ("ml-100k", "amazon-beauty", "ML_1M", "v1.2", "-x", "_"):
        assert dataset_name(name) == name


# The stages run as `python stages/x.py`: put this interpreter's environment first on PATH.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_a_shell_command_in_a_name_does_not_run_under_dvc_repro(archives, tmp_path):
    """dvc.yaml interpolates the name into each data stage's command, run by a shell before recpipe
    reads any params: quoted there, the command in the name is an argument the stage refuses."""
    for name in ("dvc.yaml", "stages", "recpipe"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)

    def write(names: list[str]) -> None:
        data = yaml.safe_load((ROOT / "params.yaml").read_text()) | {"datasets": names}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
        (tmp_path / "datasets.yaml").write_text(
            yaml.safe_dump({name: {"sources": [source("atomic", archives["atomic"])]} for name in names})
        )

    def repro(stage: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dvc", "repro", stage], cwd=tmp_path, capture_output=True, text=True, env=ENV
        )

    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=ENV)
    write(["ml-100k"])  # a good name reaches the stage (through DVC_STAGE)
    assert repro("download@ml-100k").returncode == 0 and (tmp_path / "data/raw/ml-100k/source.json").is_file()
    names = ["ml; touch marker; echo", "ml$(touch marker)", "ml`touch marker`", "ml'; touch marker; echo '"]
    write(names)
    for name in names:
        run = repro(f"download@{name}")
        assert not (tmp_path / "marker").exists(), f"{name!r} ran a command:\n{run.stdout}\n{run.stderr}"
        assert run.returncode != 0
        assert f"error: download: params.yaml: datasets.0: dataset name 'ml; touch marker; echo' {RULE}" in run.stderr
        assert "Traceback" not in run.stdout + run.stderr
    assert [p.name for p in tmp_path.glob("data/raw/*")] == ["ml-100k"]


def _write_params(folder: Path, archive: Path, *names: str) -> None:
    """params.yaml and datasets.yaml listing ml-100k and `names`, each read from `archive`."""
    data = params_dict([source("grouplens", archive)])
    data["datasets"] = ["ml-100k", *names]
    registry = {name: data["registry"]["ml-100k"] for name in ["ml-100k", *names]}
    (folder / "datasets.yaml").write_text(yaml.safe_dump(registry))
    (folder / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "registry"}))


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


@pytest.mark.parametrize("step", ["download", "ingest"])
def test_the_cli_writes_nothing_outside_the_project_for_a_name(archives, tmp_path, monkeypatch, step):
    project = tmp_path / "project"  # data/raw/../../../trav is tmp_path/trav
    project.mkdir()
    monkeypatch.chdir(project)
    _write_params(project, archives["grouplens"])
    assert CliRunner().invoke(app, ["download"]).exit_code == 0
    if step == "ingest":  # a folder outside, as a download of ../../../trav would have left it: ingest replaced it
        shutil.copytree(project / "data/raw/ml-100k", tmp_path / "trav")
        (tmp_path / "trav" / "keep.txt").write_text("mine")
    _write_params(project, archives["grouplens"], "../../../trav")
    outside = {k: v for k, v in _tree(tmp_path).items() if k.parts[0] != "project"}
    result = CliRunner().invoke(app, [step, "--dataset", "../../../trav"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output == f"error: --dataset: dataset name '../../../trav' {RULE}\n"
    result = CliRunner().invoke(app, [step])  # every dataset in `datasets`: refused as the params are read
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert (
        result.output
        == f"error: {Path('params.yaml')}: datasets.1: dataset name '../../../trav' {RULE}; datasets.yaml: dataset name '../../../trav' {RULE}\n"
    )
    assert {k: v for k, v in _tree(tmp_path).items() if k.parts[0] != "project"} == outside


@pytest.mark.parametrize("step", sorted(name for name, step in STEPS.items() if step.FOR_EACH is not None))
def test_no_step_makes_a_path_of_a_bad_name(archives, tmp_path, monkeypatch, step):
    """Called as a library, with params that skipped validation: each per-dataset step refuses the
    name before it reads or writes anything."""
    project = tmp_path / "project"  # data/raw/../../../trav is tmp_path/trav
    project.mkdir()
    monkeypatch.chdir(project)
    good = params.parse(params_dict([source("grouplens", archives["grouplens"])]))
    p = good.model_copy(update={"registry": {"../../../trav": good.registry["ml-100k"]}})
    with pytest.raises(RecpipeError) as e:
        STEPS[step].run(p, "../../../trav")
    assert str(e.value) == f"dataset name '../../../trav' {RULE}"
    assert [path.name for path in tmp_path.iterdir()] == ["project"] and not any(project.iterdir())
