from typer.testing import CliRunner

from recpipe.cli import app


def test_help_lists_every_step():
    out = CliRunner().invoke(app, ["--help"]).output
    for step in ("download", "ingest", "textualize", "instructions", "sample", "train", "evaluate", "report", "run", "stats"):
        assert step in out


def test_bad_params_is_one_clear_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 0\nsampel: {k: 3}\ndownload: {datasets: {}}\n")
    result = CliRunner().invoke(app, ["sample", "--params", str(bad)])
    assert result.exit_code == 1
    assert "sampel: unknown key (did you mean 'sample'?)" in result.output
