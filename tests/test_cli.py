from typer.testing import CliRunner

from recpipe.cli import app


def test_help_lists_every_step():
    out = CliRunner().invoke(app, ["--help"]).output
    for step in ("download", "ingest", "textualize", "instructions", "sample", "train", "evaluate", "report", "run", "stats"):
        assert step in out


def test_bad_params_is_one_clear_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 0\nsampel: {k: 3}\n")
    (tmp_path / "datasets.yaml").write_text("ml-100k: {sources: [{name: x, url: x.zip, format: atomic, members: {interactions: x}}]}\n")
    result = CliRunner().invoke(app, ["sample", "--params", str(bad)])
    assert result.exit_code == 1
    assert "sampel: unknown key (did you mean 'sample'?)" in result.output


def test_params_prints_every_key_with_its_description():
    from pydantic import BaseModel

    from recpipe.params import DatasetParams, Params, RemoteFile, Source

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
