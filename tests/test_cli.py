import yaml
from typer.testing import CliRunner

from conftest import params_dict, source
from recpipe.cli import app


def test_help_lists_every_step():
    out = CliRunner().invoke(app, ["--help"]).output
    for step in (
        "download",
        "ingest",
        "textualize",
        "instructions",
        "sample",
        "train",
        "evaluate",
        "report",
        "run",
        "stats",
    ):
        assert step in out


def test_bad_params_is_one_clear_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 0\nsampel: {k: 3}\n")
    (tmp_path / "datasets.yaml").write_text(
        "ml-100k: {sources: [{name: x, url: x.zip, format: atomic, members: {interactions: x}}]}\n"
    )
    result = CliRunner().invoke(app, ["sample", "--params", str(bad)])
    assert result.exit_code == 1
    assert "sampel: unknown key (did you mean 'sample'?)" in result.output


def write_params(path, **sections):
    data = params_dict([source("grouplens", path.parent / "missing.zip")], **sections)
    (path.parent / "datasets.yaml").write_text(yaml.safe_dump(data.pop("registry")))
    path.write_text(yaml.safe_dump(data))
    return path


def test_version_and_short_help():
    from recpipe import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"recpipe {__version__}"
    assert __version__ and __version__ != "0+unknown"  # the installed package's metadata
    short = CliRunner().invoke(app, ["-h"])
    assert short.exit_code == 0 and short.output == CliRunner().invoke(app, ["--help"]).output
    assert CliRunner().invoke(app, ["stats", "-h"]).exit_code == 0


def test_stats_bad_params_with_dataset_is_one_line(tmp_path, monkeypatch):
    import polars as pl

    monkeypatch.chdir(tmp_path)
    tables = tmp_path / "data" / "tables" / "ml-100k"
    tables.mkdir(parents=True)
    pl.DataFrame({"user_id": [1], "item_id": [2], "rating": [3.0]}).write_parquet(tables / "interactions.parquet")
    (tmp_path / "data" / "instructions").mkdir()
    (tmp_path / "data" / "instructions" / "samples.parquet").write_bytes(b"")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nsampel: {k: 3}\n")
    (tmp_path / "datasets.yaml").write_text(
        "ml-100k: {sources: [{name: x, url: x.zip, format: atomic, members: {interactions: x}}]}\n"
    )
    result = CliRunner().invoke(app, ["stats", "--params", str(bad), "--dataset", "ml-100k"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "error: " in result.output and "sampel: unknown key" in result.output
    assert "Traceback" not in result.output and "ml-100k: interactions" not in result.output


def test_stats_unknown_dataset_names_the_params_datasets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path / "params.yaml")
    result = CliRunner().invoke(app, ["stats", "--params", str(params), "--dataset", "nosuch"])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: --dataset 'nosuch': not among the datasets in {params}: ['ml-100k']"
    assert "dvc repro" not in result.output


def test_p5_with_no_p5_datasets_says_how_to_turn_it_on(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from recpipe import cli

    ran = []
    steps = {
        name: SimpleNamespace(FOR_EACH=step.FOR_EACH, run=lambda *a, name=name: ran.append(name))
        for name, step in cli.STEPS.items()
    }
    monkeypatch.setattr(cli, "STEPS", steps)
    params = write_params(tmp_path / "params.yaml")
    result = CliRunner().invoke(app, ["p5", "--params", str(params)])
    assert result.exit_code == 1 and not ran
    assert len(result.output.strip().splitlines()) == 1
    assert "p5.datasets is empty" in result.output and "dvc exp run -S 'p5.datasets=[ml-100k]'" in result.output
    assert "recpipe p5 --dataset ml-100k" in result.output
    # `run` runs every step: with no P5 datasets, just no P5 steps.
    result = CliRunner().invoke(app, ["run", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert ran == [name for name, step in steps.items() if step.FOR_EACH in (None, "datasets")]
    # --dataset runs P5 on one dataset even with p5.datasets empty.
    ran.clear()
    result = CliRunner().invoke(app, ["p5", "--params", str(params), "--dataset", "ml-100k"])
    assert result.exit_code == 0, result.output
    assert ran == ["families", "p5_sample", "p5_train", "p5_evaluate", "baselines", "p5_report"]


def test_params_prints_every_key_with_its_description():
    from pydantic import BaseModel

    from recpipe.params.registry import DatasetParams, RemoteFile, Source
    from recpipe.params.schema import Params

    out = CliRunner().invoke(app, ["params"]).output
    rows = {line.split("|")[1].strip().strip("`"): line for line in out.splitlines() if line.startswith("| `")}

    def check(model: type[BaseModel], prefix: str, defaults: BaseModel | None = None) -> None:
        for name, field in type(defaults).model_fields.items() if defaults is not None else model.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            value = getattr(defaults, name, None)
            if field.exclude:
                continue
            if isinstance(value, BaseModel):  # a section: a heading with its description, a row per key
                assert f"## params.yaml: {key}\n\n{' '.join(field.description.split())}\n" in out, key
                check(type(value), key, value)
                continue
            assert key in rows, key
            assert field.description in rows[key], key

    check(Params, "", Params.model_construct())
    check(DatasetParams, "<name>")
    check(Source, "<name>.sources[]")
    check(RemoteFile, "<name>.sources[].files.<role>")
    assert "| `p5.k` | int or null | `10219` |" in out and "| `p5.train.batch_size` | int | `4` |" in out
