import json
import random

import polars as pl
import pytest

from conftest import params_dict, source
from recpipe import RecpipeError
from recpipe.metrics import paired_bootstrap_auc
from recpipe.params.schema import parse
from recpipe.tallrec.baselines import history_prior
from recpipe.tallrec.report import report as _report


def report(reports, live, out, p):
    root = reports.parent
    return _report(reports, live, out, p, root / "eval", root / "samples.parquet", root / "tables")


def fake_predictions(root, n=60):
    """Test samples whose labels follow their history's liked share, and base/tuned scores."""
    rng = random.Random(0)
    samples, ratings, base, tuned = [], [], [], []
    for i in range(n):
        liked = rng.randint(0, 4)
        history = list(range(100 * i, 100 * i + 4))
        ratings += [
            {"user_id": i, "item_id": item, "rating": 5.0 if j < liked else 2.0} for j, item in enumerate(history)
        ]
        label = int(liked >= 2 if rng.random() < 0.85 else liked < 2)
        samples.append(
            {
                "sample_id": f"{i:03d}",
                "split": "test",
                "user_id": i,
                "item_id": 9999,
                "label": label,
                "history_item_ids": history,
            }
        )
        base.append(rng.random())
        tuned.append(0.6 * label + 0.4 * rng.random())
    (root / "tables").mkdir()
    pl.DataFrame(ratings).write_parquet(root / "tables" / "interactions.parquet")
    frame = pl.DataFrame(samples)
    frame.write_parquet(root / "samples.parquet")
    for name, scores in (("base", base), ("tuned", tuned)):
        (root / "eval" / name).mkdir(parents=True)
        frame.select("sample_id", "user_id", "item_id", "label").with_columns(p_yes=pl.Series(scores)).write_parquet(
            root / "eval" / name / "predictions.parquet"
        )


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
    fake_predictions(root)
    return reports, root / "live"


def params(tmp_path, k=64):
    return parse(
        {**params_dict([source("atomic", tmp_path / "x.whl")], sample={"k": k}), "model": {"name": "org/model"}}
    )


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


def test_history_prior_is_the_liked_share_of_the_listed_history():
    samples = pl.DataFrame(
        {"sample_id": ["a", "b", "c"], "user_id": [1, 1, 2], "history_item_ids": [[10, 11, 12, 13], [], [10, 14]]}
    )
    ratings = pl.DataFrame(
        {"user_id": [1, 1, 1, 1, 2, 2], "item_id": [10, 11, 12, 13, 10, 14], "rating": [5.0, 4.0, 3.0, 1.0, 3.0, 3.5]}
    )
    assert history_prior(samples, ratings, like_threshold=3) == [0.5, 0.5, 0.5]
    assert history_prior(samples, ratings, like_threshold=4) == [0.25, 0.5, 0.0]


def test_paired_bootstrap_auc():
    from sklearn.metrics import roc_auc_score

    rng = random.Random(1)
    labels = [rng.randint(0, 1) for _ in range(200)]
    perfect = [y + rng.random() * 0.5 for y in labels]
    noise = [rng.random() for _ in labels]
    out = paired_bootstrap_auc(
        labels,
        {"perfect": perfect, "noise": noise, "same": noise},
        [("perfect", "noise"), ("same", "noise")],
        rounds=500,
    )
    assert out["perfect"]["auc"] == 1.0 and out["perfect"]["ci"] == [1.0, 1.0]
    assert out["noise"]["auc"] == round(roc_auc_score(labels, noise), 5)
    assert out["noise"]["ci"][0] < out["noise"]["auc"] < out["noise"]["ci"][1]
    assert out["perfect_vs_noise"]["p"] < 0.01 and out["perfect_vs_noise"]["ci"][0] > 0
    assert out["same_vs_noise"] == {"difference": 0.0, "ci": [0.0, 0.0], "p": 1.0}


def test_report_sets_the_tuned_model_beside_the_history_prior(tmp_path):
    reports, live = fake_inputs(tmp_path)
    text = report(reports, live, reports / "report.md", params(tmp_path))
    iv = json.loads((reports / "intervals.json").read_text())
    assert set(iv) == {"base", "tuned", "history_prior", "tuned_vs_history_prior", "tuned_vs_base"}
    assert (
        iv["history_prior"]["auc"] > 0.75 and iv["tuned"]["auc"] > 0.9
    )  # labels follow the liked share 85% of the time
    row = next(line for line in text.splitlines() if line.startswith("| history prior |"))
    assert f"{iv['history_prior']['auc']:.4f}" in row
    assert "| LoRA-tuned − history prior |" in text
