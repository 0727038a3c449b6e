import json

import pytest
from conftest import params_dict, source

from recpipe import RecpipeError
from recpipe.params import parse
from recpipe.tallrec.report import report


def fake_inputs(root):
    reports, live = root / "reports", root / "live" / "plots" / "metrics"
    reports.mkdir(parents=True)
    live.mkdir(parents=True)
    (reports / "base.json").write_text(json.dumps({"auc": 0.4321, "accuracy": 0.36, "n": 999}))
    (reports / "tuned.json").write_text(json.dumps({"auc": 0.6012, "accuracy": 0.55, "n": 999}))
    (reports / "train.json").write_text(json.dumps({"train_loss": 0.31, "valid_auc": 0.58}))
    (reports / "train_run.json").write_text(json.dumps({"train_seconds": 12.5, "dtype": "float32"}))
    for name in ("roc_base.csv", "roc_tuned.csv"):
        (reports / name).write_text("fpr,tpr\n0.0,0.0\n0.3,0.6\n1.0,1.0\n")
    (live / "loss.tsv").write_text("step\tloss\n0\t1.2\n1\t0.8\n2\t0.5\n")
    (live / "learning_rate.tsv").write_text("step\tlearning_rate\n0\t0.0\n1\t0.001\n2\t0.0005\n")
    return reports, root / "live"


def params(tmp_path, k=64):
    return parse({**params_dict([source("atomic", tmp_path / "x.whl")], sample={"k": k}), "model": {"name": "org/model"}})


def test_report_puts_our_auc_beside_the_papers(tmp_path):
    reports, live = fake_inputs(tmp_path)
    text = report(reports, live, reports / "report.md", params(tmp_path, k=64))
    assert "| 0.6012 |" in text and "| 0.4321 |" in text  # tuned and base AUC
    row = next(line for line in text.splitlines() if line.startswith("| **64** (this run)"))
    assert "67.48" in row and "**60.12**" in row  # the paper's K=64 AUC and ours on its scale
    assert "`org/model`" in text
    for png in ("training.png", "roc.png"):
        assert (reports / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_is_byte_identical_on_rerun(tmp_path):
    reports, live = fake_inputs(tmp_path)
    p = params(tmp_path)
    report(reports, live, reports / "report.md", p)
    first = {f.name: f.read_bytes() for f in [reports / "report.md", *sorted((reports / "plots").iterdir())]}
    report(reports, live, reports / "report.md", p)
    assert first == {f.name: f.read_bytes() for f in [reports / "report.md", *sorted((reports / "plots").iterdir())]}


def test_k_the_paper_lacks_is_said(tmp_path):
    reports, live = fake_inputs(tmp_path)
    text = report(reports, live, reports / "report.md", params(tmp_path, k=32))
    assert "no row for K = 32" in text and "** (this run)" not in text


def test_missing_input_names_the_file_and_its_stage(tmp_path):
    reports, live = fake_inputs(tmp_path)
    (reports / "tuned.json").unlink()
    with pytest.raises(RecpipeError, match=r"tuned.json: not found \(the evaluate stage"):
        report(reports, live, reports / "report.md", params(tmp_path))
    assert not (reports / "report.md").exists()
