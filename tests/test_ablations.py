"""RecSysLLM's ablation table and LoRA rank sweep, aggregated from handmade `dvc exp show --json`."""

import json
import statistics

import pytest
from typer.testing import CliRunner

from recpipe import RecpipeError
from recpipe.ablations import FULL, aggregate, classify, render, write_ablations
from recpipe.cli import app
from recpipe.experiments import flatten, read_exp_shows, records
from test_sweep import write_params

FULL_PARAMS = {
    "seed": 0,
    "lora": {"rank": 8},
    "train": {"init": "pretrained", "lr": 0.001},
    "p5": {
        "datasets": ["ml-100k"],
        "lora": {"rank": 8},
        "train": {"init": "pretrained"},
        "sequential_ranking": "likelihood",
    },
    "recsysllm": {
        "datasets": ["ml-100k"],
        "sampling": {"mode": "temporal"},
        "whole_entities": True,
        "order": "chronological",
        "positions_2d": True,
        "dynamic_positions": True,
    },
}


def run(name, seed, score, timestamp="2026-01-01T00:00:00", finished=True, **changes):
    """One revision as `dvc exp show --json` writes it: the params with `changes` (dotted keys as
    a__b__c) and metrics that grow with `score`."""
    params = json.loads(json.dumps(FULL_PARAMS))
    params["seed"] = seed
    for key, value in changes.items():
        *path, leaf = key.split("__")
        node = params
        for part in path:
            node = node[part]
        node[leaf] = value
    families = "reports/p5/ml-100k/families"
    seq = {
        g: {
            "n": 10,
            "hr@5": score / 2,
            "ndcg@5": score / 3,
            "hr@10": score,
            "ndcg@10": score / 2 + (g == "unseen") / 100,
        }
        for g in ("seen", "unseen")
    }
    rating = {
        g: {"n": 10, "rmse": 1.2 - score, "mae": 0.9 - score, "yes_no_auc": 0.5 + score} for g in ("seen", "unseen")
    }
    metrics = {
        "reports/tuned.json": {"data": {"auc": 0.6 + score}},
        f"{families}/sequential.json": {"data": seq},
        f"{families}/rating.json": {"data": rating},
    }
    data = {
        "rev": f"{name}-rev",
        "timestamp": timestamp,
        "params": {"params.yaml": {"data": params}},
        "metrics": metrics if finished else {},
        "deps": {},
        "outs": {},
        "meta": {},
    }
    return {"rev": f"{name}-rev", "name": name, "data": data, "error": None, "experiments": None}


def exp_show(*exps):
    return [{**run("main", 0, 0.1), "experiments": [{"revs": [e], "executor": None, "name": e["name"]} for e in exps]}]


EXPS = [
    run("full-1", 1, 0.12),
    run("full-2", 2, 0.14),  # with main: the full recipe at seeds 0, 1, 2
    run("base-0", 0, 0.05, train__init="base", p5__train__init="base"),
    run("base-1", 1, 0.07, train__init="base", p5__train__init="base"),
    run("uniform", 0, 0.08, recsysllm__sampling__mode="uniform"),
    run("recent", 0, 0.09, recsysllm__sampling__mode="recent"),
    run("tokens", 0, 0.11, recsysllm__whole_entities=False),
    run("random", 0, 0.1, recsysllm__order="random"),
    run("flat", 5, 0.06, recsysllm__positions_2d=False),
    run("static", 0, 0.09, recsysllm__dynamic_positions=False),
]


def test_one_row_per_switch_setting_with_mean_sd_and_the_paired_difference():
    ab = aggregate(records(exp_show(*EXPS)), flatten(FULL_PARAMS))
    labels = [(r["switch"], r["setting"]) for r in ab.rows]
    assert labels == [
        (FULL, ""),
        ("behaviour sampling", "recsysllm.sampling.mode=recent"),
        ("behaviour sampling", "recsysllm.sampling.mode=uniform"),
        ("masking", "recsysllm.whole_entities=False"),
        ("span order", "recsysllm.order=random"),
        ("2D positions", "recsysllm.positions_2d=False"),
        ("dynamic positions", "recsysllm.dynamic_positions=False"),
        ("pretraining", "p5.train.init=base, train.init=base"),
    ]
    full, base = ab.rows[0], ab.rows[-1]
    aucs = [0.7, 0.72, 0.74]
    assert full["seeds"] == [0, 1, 2] and full["metrics"]["TALLRec AUC"]["mean"] == round(statistics.fmean(aucs), 5)
    assert full["metrics"]["TALLRec AUC"]["sd"] == round(statistics.stdev(aucs), 5) and full["vs_full"] == {}
    assert full["metrics"]["sequential unseen ndcg@10"]["mean"] == round(statistics.fmean([0.06, 0.07, 0.08]), 5)
    assert full["metrics"]["rating seen rmse"]["mean"] == round(statistics.fmean([1.1, 1.08, 1.06]), 5)
    # No pretraining: seeds 0 and 1 paired with the full recipe's seeds 0 and 1.
    assert base["metrics"]["sequential seen hr@10"] == {
        "mean": 0.06,
        "sd": round(statistics.stdev([0.05, 0.07]), 5),
        "n": 2,
        "by_seed": {"0": 0.05, "1": 0.07},
    }
    assert base["vs_full"]["sequential seen hr@10"] == {
        "diff": round(statistics.fmean([0.05 - 0.1, 0.07 - 0.12]), 5),
        "paired_seeds": [0, 1],
    }
    assert base["vs_full"]["rating unseen mae"]["diff"] == round(statistics.fmean([0.05, 0.05]), 5)
    assert base["vs_full"]["rating seen yes_no_auc"]["diff"] == round(statistics.fmean([-0.05, -0.05]), 5)
    # A seed the full recipe did not run: the difference of the means, marked unpaired.
    flat = ab.rows[5]
    assert flat["metrics"]["TALLRec AUC"]["sd"] is None
    assert flat["vs_full"]["TALLRec AUC"] == {"diff": round(0.66 - statistics.fmean(aucs), 5), "paired_seeds": []}
    assert ab.notes == [] and ab.ranks == {}
    md = render(ab, "ml-100k")
    assert f"| full recipe | - | 3 | {statistics.fmean(aucs):.4f} ± {statistics.stdev(aucs):.4f} |" in md
    assert "| 2D positions | recsysllm.positions_2d=False | 1 | 0.6600 (-0.0600, unpaired) |" in md


def test_several_switches_other_params_and_unfinished_runs_are_left_out_with_a_note():
    exps = [
        run("two", 0, 0.2, recsysllm__order="random", recsysllm__whole_entities=False),
        run("lr", 0, 0.2, train__lr=0.01),
        run("queued", 0, 0.2, finished=False, recsysllm__order="random"),
        run("random-old", 0, 0.3, recsysllm__order="random", timestamp="2026-01-01T00:00:00"),
        run("random-new", 0, 0.25, recsysllm__order="random", timestamp="2026-01-02T00:00:00"),
    ]
    ab = aggregate(records(exp_show(*exps)), flatten(FULL_PARAMS))
    assert [r["switch"] for r in ab.rows] == [FULL, "span order"]
    assert ab.rows[1]["metrics"]["TALLRec AUC"]["by_seed"] == {"0": 0.85}  # the newest of the same seed
    assert any("more than one switch" in n and "two" in n and "lr" in n for n in ab.notes)
    assert any("without any of the metrics" in n and "queued" in n for n in ab.notes)
    assert classify(flatten(FULL_PARAMS), flatten(FULL_PARAMS)) == (FULL, "")
    assert classify(flatten({**FULL_PARAMS, "seed": 4}), flatten(FULL_PARAMS)) == (FULL, "")


def ranked(name, rank, seed, score):
    return run(name, seed, score, lora__rank=rank, p5__lora__rank=rank)


def test_the_rank_sweep_gives_each_metric_against_rank():
    exps = [ranked(f"r{r}-{s}", r, s, r / 100 + s / 1000) for r in (2, 4, 16, 32) for s in (0, 1)]
    exps.append(run("full-1", 1, 0.081))
    exps.append(run("tallrec-only", 2, 0.5, lora__rank=4))  # P5 at the full recipe's rank 8, TALLRec at 4
    ab = aggregate(records(exp_show(*exps)), flatten(FULL_PARAMS))
    assert [r["switch"] for r in ab.rows] == [FULL]  # rank points are not ablation rows
    auc = ab.ranks["TALLRec AUC"]
    assert sorted(auc) == [2, 4, 8, 16, 32]
    assert auc[16]["by_seed"] == {"0": 0.76, "1": 0.761} and auc[8]["by_seed"] == {"0": 0.7, "1": 0.681}
    assert auc[4]["by_seed"] == {"0": 0.64, "1": 0.641, "2": 1.1}
    hr = ab.ranks["sequential seen hr@10"]
    assert hr[4]["by_seed"] == {"0": 0.04, "1": 0.041} and hr[8]["by_seed"] == {"0": 0.1, "1": 0.081, "2": 0.5}
    assert "## LoRA rank" in render(ab, "ml-100k")


def test_bad_input_is_one_clear_line(tmp_path):
    with pytest.raises(RecpipeError, match="expected a list of revisions"):
        write_ablations({"rows": []}, flatten(FULL_PARAMS), tmp_path)
    with pytest.raises(
        RecpipeError, match=r"^p5.datasets: the ablation reads one P5 dataset's metrics, the reference params list \[\]"
    ):
        aggregate([], flatten({**FULL_PARAMS, "p5": {**FULL_PARAMS["p5"], "datasets": []}}))
    with pytest.raises(
        RecpipeError, match="no finished experiment is the full recipe, one switch away from it or a LoRA rank of it"
    ):
        write_ablations(exp_show(), flatten({**FULL_PARAMS, "seed": 0, "train": {"init": "base", "lr": 0.5}}), tmp_path)
    params = write_params(tmp_path, FULL_PARAMS)
    result = CliRunner().invoke(app, ["ablations", "--params", str(params), "--from", str(tmp_path / "missing.json")])
    assert (
        result.exit_code == 1 and result.output.strip().count("\n") == 0 and "missing.json: not found" in result.output
    )
    result = CliRunner().invoke(
        app, ["ablations", "--params", str(params), "-S", "recsysllm.nope=1", "--from", str(params)]
    )
    assert (
        result.exit_code == 1 and result.output.strip().count("\n") == 0 and "--set 'recsysllm.nope=1'" in result.output
    )


def test_cli_writes_json_markdown_and_the_rank_plot(tmp_path):
    exps = [*EXPS, *(ranked(f"r{r}", r, 0, r / 100) for r in (2, 4, 16, 32))]
    saved = tmp_path / "exp.json"
    saved.write_text(json.dumps(exp_show(*exps)))
    params = write_params(
        tmp_path,
        {**FULL_PARAMS, "train": {"init": "base", "lr": 0.001}, "p5": {**FULL_PARAMS["p5"], "train": {"init": "base"}}},
    )
    out = tmp_path / "reports"
    args = [
        "ablations",
        "--params",
        str(params),
        "--from",
        str(saved),
        "--out",
        str(out),
        "-S",
        "train.init=pretrained",
        "-S",
        "p5.train.init=pretrained",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads((out / "recsysllm_ablations.json").read_text())
    assert written["dataset"] == "ml-100k" and len(written["rows"]) == 8 and written["rows"][0]["switch"] == FULL
    assert sorted(written["lora_rank"]["TALLRec AUC"], key=int) == ["2", "4", "8", "16", "32"]
    assert "| pretraining | p5.train.init=base, train.init=base | 2 |" in (out / "recsysllm_ablations.md").read_text()
    png = (out / "recsysllm_lora_rank.png").read_bytes()
    assert png[:4] == b"\x89PNG"
    assert (
        CliRunner().invoke(app, args).exit_code == 0 and (out / "recsysllm_lora_rank.png").read_bytes() == png
    )  # the same records, the same bytes


def test_experiments_saved_in_several_files_aggregate_as_one(tmp_path):
    """Experiments run on two machines, each saved with `dvc exp show --json`, give the table one
    saved file of all of them gives; a file that is not exp show's list names itself."""
    params = write_params(
        tmp_path,
        {**FULL_PARAMS, "train": {"init": "base", "lr": 0.001}, "p5": {**FULL_PARAMS["p5"], "train": {"init": "base"}}},
    )
    full = ["-S", "train.init=pretrained", "-S", "p5.train.init=pretrained"]
    half = len(EXPS) // 2
    files = {"all": EXPS, "first": EXPS[:half], "second": EXPS[half:]}
    for name, exps in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(exp_show(*exps)))
    one = CliRunner().invoke(
        app,
        [
            "ablations",
            "--params",
            str(params),
            "--from",
            str(tmp_path / "all.json"),
            "--out",
            str(tmp_path / "one"),
            *full,
        ],
    )
    two = CliRunner().invoke(
        app,
        [
            "ablations",
            "--params",
            str(params),
            "--from",
            str(tmp_path / "first.json"),
            "--from",
            str(tmp_path / "second.json"),
            "--out",
            str(tmp_path / "two"),
            *full,
        ],
    )
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    only_first = CliRunner().invoke(
        app,
        [
            "ablations",
            "--params",
            str(params),
            "--from",
            str(tmp_path / "first.json"),
            "--out",
            str(tmp_path / "part"),
            *full,
        ],
    )
    assert only_first.exit_code == 0, only_first.output
    table = (tmp_path / "one" / "recsysllm_ablations.json").read_text()
    assert (tmp_path / "two" / "recsysllm_ablations.json").read_text() == table
    assert (tmp_path / "part" / "recsysllm_ablations.json").read_text() != table
    names = [r["name"] for r in records(read_exp_shows([tmp_path / "first.json", tmp_path / "second.json"]))]
    assert names == [
        r["name"] for r in records(read_exp_shows([tmp_path / "all.json"]))
    ]  # the baseline both files hold, once
    (tmp_path / "mapping.json").write_text(json.dumps({"rows": []}))
    bad = CliRunner().invoke(
        app,
        [
            "ablations",
            "--params",
            str(params),
            "--from",
            str(tmp_path / "first.json"),
            "--from",
            str(tmp_path / "mapping.json"),
            *full,
        ],
    )
    assert (
        bad.exit_code == 1
        and bad.output.strip().count("\n") == 0
        and "mapping.json: expected a list of revisions" in bad.output
    )


def test_a_report_is_not_replaced_by_one_with_fewer_runs_and_set_values_are_checked(tmp_path):
    params = write_params(
        tmp_path,
        {**FULL_PARAMS, "train": {"init": "base", "lr": 0.001}, "p5": {**FULL_PARAMS["p5"], "train": {"init": "base"}}},
    )
    full = ["-S", "train.init=pretrained", "-S", "p5.train.init=pretrained"]
    out = tmp_path / "reports"
    (tmp_path / "all.json").write_text(json.dumps(exp_show(*EXPS, *(ranked(f"r{r}", r, 0, r / 100) for r in (2, 4)))))
    (tmp_path / "none.json").write_text(
        json.dumps(exp_show())
    )  # no experiments: the baseline commit's full recipe only
    ablations = ["ablations", "--params", str(params), "--out", str(out), *full, "--from"]
    assert CliRunner().invoke(app, [*ablations, str(tmp_path / "all.json")]).exit_code == 0
    written = {
        name: (out / name).read_bytes()
        for name in ("recsysllm_ablations.json", "recsysllm_ablations.md", "recsysllm_lora_rank.png")
    }
    result = CliRunner().invoke(app, [*ablations, str(tmp_path / "none.json")])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0, result.output
    assert (
        "recsysllm_ablations.json holds 16 run(s) and the new report would drop 15 of them (ml-100k 2D positions (recsysllm.positions_2d=False) seed 5, ml-100k LoRA rank 2 seed 0, ml-100k LoRA rank 4 seed 0, ...)"
        in result.output
    )
    assert "--force" in result.output and {name: (out / name).read_bytes() for name in written} == written
    assert CliRunner().invoke(app, [*ablations, str(tmp_path / "none.json"), "--force"]).exit_code == 0
    assert [r["seeds"] for r in json.loads((out / "recsysllm_ablations.json").read_text())["rows"]] == [[0]]
    result = CliRunner().invoke(app, [*ablations, str(tmp_path / "all.json"), "-S", "p5.lora.rank=abc"])
    assert (
        result.exit_code == 1
        and result.output.strip().count("\n") == 0
        and "--set: p5.lora.rank: Input should be a valid integer" in result.output
    )
