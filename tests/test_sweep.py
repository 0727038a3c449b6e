import json
import statistics

import pytest
from typer.testing import CliRunner

from recpipe import RecpipeError
from recpipe.cli import app
from recpipe.experiments import flatten, records, reference_params
from recpipe.tallrec.sweep import ALL, aggregate, paper_line, plot, render, write_sweep

BASE = {
    "seed": 0,
    "instructions": {"split": "temporal", "history_len": 10},
    "sample": {"k": 64},
    "train": {"lr": 0.001, "eval_steps": None},
}


def write_params(folder, data):
    """params.yaml as `data`, and a datasets.yaml that knows ml-100k: the params are checked as a stage reads them."""
    (folder / "datasets.yaml").write_text(
        "ml-100k: {sources: [{name: x, url: x.zip, format: atomic, members: {interactions: x}}]}\n"
    )
    params = folder / "params.yaml"
    params.write_text(json.dumps(data))
    return params


def row(name, seed, k, split="temporal", auc=None, prior=0.79, timestamp="2026-01-01T00:00:00", **changes):
    """One revision as `dvc exp show --json` (dvc 3) writes it."""
    params = json.loads(json.dumps(BASE))
    params["seed"], params["sample"]["k"], params["instructions"]["split"] = seed, k, split
    for key, value in changes.items():
        section, leaf = key.split("__")
        params.setdefault(section, {})[leaf] = value
    metrics = (
        {}
        if auc is None
        else {
            "reports/tuned.json": {"data": {"auc": auc, "accuracy": 0.5}},
            "reports/intervals.json": {"data": {"history_prior": {"auc": prior, "ci": [0.7, 0.8]}}},
        }
    )
    data = {
        "rev": f"{name}-rev",
        "timestamp": timestamp,
        "params": {"params.yaml": {"data": params}, "datasets.yaml": {"data": {}}},
        "metrics": metrics,
        "deps": {},
        "outs": {},
        "meta": {},
    }
    return {"rev": f"{name}-rev", "name": name, "data": data, "error": None, "experiments": None}


def exp_show(baseline, *exps, states=None):
    """The JSON shape: the workspace, then each baseline commit with its experiments (`states`: an
    executor state per experiment name; none for a finished one kept in git)."""
    workspace = {**row("workspace", 9, 64, auc=0.99), "rev": "workspace", "name": None}
    states = states or {}

    def executor(name):
        return (
            None
            if name not in states
            else {"state": states[name], "name": "dvc-task", "local": {"root": None, "returncode": None}}
        )

    return [
        workspace,
        {**baseline, "experiments": [{"revs": [e], "executor": executor(e["name"]), "name": e["name"]} for e in exps]},
    ]


def test_records_flatten_the_params_and_skip_the_workspace():
    recs = records(exp_show(row("main", 0, 64, auc=0.6), row("a", 1, 16, auc=0.55)))
    assert [r["name"] for r in recs] == ["main", "a"]  # the workspace's 0.99 is not a run of its own
    assert recs[1]["params"]["sample.k"] == 16 and recs[1]["params"]["instructions.split"] == "temporal"
    assert recs[1]["metrics"]["reports/tuned.json"]["auc"] == 0.55


def test_unfinished_experiments_have_no_metrics():
    """DVC shows a running experiment with its baseline's metric files: they are not its own."""
    exps = [
        row("done", 1, 16, auc=0.55),
        row("queued", 2, 16, auc=0.6),
        row("running", 3, 16, auc=0.6),
        row("failed", 4, 16, auc=0.6),
        row("kept", 5, 16, auc=0.52),
    ]
    states = {"done": "success", "queued": "queued", "running": "running", "failed": "failed"}
    recs = {r["name"]: r for r in records(exp_show(row("main", 0, 64, auc=0.6), *exps, states=states))}
    assert [n for n, r in recs.items() if r["metrics"]] == ["main", "done", "kept"]
    sweep = aggregate(list(recs.values()), flatten(BASE))
    assert sweep.table["temporal"][16]["seeds"] == [1, 5]


def test_aggregate_mean_sd_seeds_per_split_and_k():
    exps = [row(f"t{k}-{s}", s, k, auc=round(0.5 + s / 100 + k / 10000, 5)) for k in (16, 256) for s in (2, 0, 1)]
    exps.append(row("p16", 0, 16, split="paper", auc=0.7, prior=0.65))
    sweep = aggregate(records(exp_show(row("main", 0, 64, auc=0.6), *exps)), flatten(BASE))
    t16 = sweep.table["temporal"][16]
    assert t16["seeds"] == [0, 1, 2] and t16["aucs"] == [0.5016, 0.5116, 0.5216]
    assert t16["mean"] == round(statistics.fmean(t16["aucs"]), 5) and t16["sd"] == round(
        statistics.stdev(t16["aucs"]), 5
    )
    assert sweep.table["temporal"][64] == {
        "seeds": [0],
        "aucs": [0.6],
        "mean": 0.6,
        "sd": None,
    }  # the baseline commit's run counts
    assert sweep.table["paper"][16]["aucs"] == [0.7] and sweep.prior == {"temporal": 0.79, "paper": 0.65}
    assert sweep.notes == []


def test_duplicates_count_once_and_the_newest_wins_when_they_differ():
    exps = [
        row("a", 0, 16, auc=0.6, timestamp="2026-01-01T00:00:00"),
        row("a-again", 0, 16, auc=0.6, timestamp="2026-01-02T00:00:00"),
        row("b-old", 1, 16, auc=0.5, timestamp="2026-01-01T00:00:00"),
        row("b-new", 1, 16, auc=0.7, timestamp="2026-01-03T00:00:00"),
    ]
    sweep = aggregate(records(exp_show(row("main", 0, 64, auc=0.6), *exps)), flatten(BASE))
    assert sweep.table["temporal"][16]["aucs"] == [0.6, 0.7]
    assert (
        len(sweep.notes) == 1
        and "seed 1: 2 runs with different AUCs" in sweep.notes[0]
        and "the newest, b-new, counts" in sweep.notes[0]
    )


def test_missing_metrics_and_other_params_are_left_out_with_a_note():
    exps = [
        row("queued", 0, 16),  # no metrics yet
        row("lr", 1, 16, auc=0.9, train__lr=1e-4),  # another setting: not this sweep's
        row("ok", 2, 16, auc=0.6),
    ]
    sweep = aggregate(records(exp_show(row("main", 0, 64, auc=0.6), *exps)), flatten(BASE))
    assert sweep.table["temporal"][16]["seeds"] == [2]
    assert any("without a test AUC" in n and "queued" in n for n in sweep.notes)
    assert any("other params" in n and "lr" in n for n in sweep.notes)
    # The same experiments, with the reference set to that other setting: only it counts.
    other = aggregate(records(exp_show(row("main", 0, 64, auc=0.6), *exps)), {**flatten(BASE), "train.lr": 0.0001})
    assert other.table == {"temporal": {16: {"seeds": [1], "aucs": [0.9], "mean": 0.9, "sd": None}}}


def test_bad_input_is_one_clear_line(tmp_path):
    with pytest.raises(RecpipeError, match="expected a list of revisions"):
        records({"not": "a list"})
    params = write_params(tmp_path, BASE)
    with pytest.raises(RecpipeError, match=r"--set 'train.lrr=1': expected key=value with a dotted key"):
        reference_params(params, ["train.lrr=1"])
    assert reference_params(params, ["train.lr=1e-4"])["train.lr"] == 1e-4
    with pytest.raises(RecpipeError, match="no finished experiment matches"):
        write_sweep(exp_show(row("main", 0, 64)), flatten(BASE), tmp_path / "out")
    bad = tmp_path / "exp.json"
    bad.write_text("[{")
    result = CliRunner().invoke(app, ["sweep", "--params", str(params), "--from", str(bad)])
    assert (
        result.exit_code == 1 and result.output.strip().count("\n") == 0 and "exp.json: not valid JSON" in result.output
    )


def test_cli_writes_json_markdown_and_plot(tmp_path):
    exps = [
        row(f"{split}-{k}-{s}", s, k, split=split, auc=round(0.55 + s / 100, 5))
        for split in ("temporal", "paper")
        for k in (16, 64, 256)
        for s in range(5)
    ]
    saved = tmp_path / "exp.json"
    saved.write_text(json.dumps(exp_show(row("main", 0, 64, auc=0.55), *exps)))
    params = write_params(tmp_path, BASE)
    result = CliRunner().invoke(
        app, ["sweep", "--params", str(params), "--from", str(saved), "--out", str(tmp_path / "reports")]
    )
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "reports" / "tallrec_sweep.json").read_text())
    assert sorted(out) == ["paper", "temporal"] and sorted(out["paper"], key=int) == ["16", "64", "256"]
    assert out["temporal"]["64"] == {
        "mean": 0.57,
        "sd": round(statistics.stdev([0.55, 0.56, 0.57, 0.58, 0.59]), 5),
        "seeds": [0, 1, 2, 3, 4],
        "aucs": [0.55, 0.56, 0.57, 0.58, 0.59],
    }
    md = (tmp_path / "reports" / "tallrec_sweep.md").read_text()
    assert "| temporal | 64 | 5 | 0.5700 ± 0.0158 | 0.6748 | 0.7900 |" in md
    assert (tmp_path / "reports" / "tallrec_sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_paper_line_is_the_papers_own_model_as_a_fraction():
    from recpipe.io import read_mapping
    from recpipe.tallrec.sweep import REFERENCES

    ref = read_mapping(REFERENCES / "tallrec.yaml")
    assert paper_line(ref) == {16: 0.6724, 64: 0.6748, 256: 0.7198}
    sweep = aggregate(records(exp_show(row("main", 0, 32, auc=0.6))), flatten({**BASE, "sample": {"k": 32}}))
    assert "| temporal | 32 | 1 | 0.6000 | n/a | 0.7900 |" in render(sweep, ref)  # no paper row for K = 32


def test_a_report_is_not_replaced_by_one_with_fewer_runs(tmp_path):
    """A sweep that finds fewer experiments (none yet, another commit's) keeps the report it
    would shrink, in one line saying what it would drop, unless --force."""
    params = write_params(tmp_path, BASE)
    out = tmp_path / "reports"
    full, few, more = tmp_path / "full.json", tmp_path / "few.json", tmp_path / "more.json"
    exps = [row(f"t{k}-{s}", s, k, auc=0.55 + s / 100) for k in (16, 256) for s in range(3)]
    full.write_text(json.dumps(exp_show(row("main", 0, 64, auc=0.6), *exps)))
    few.write_text(json.dumps(exp_show(row("main", 0, 64, auc=0.6))))  # no experiments: the baseline commit's run only
    more.write_text(json.dumps(exp_show(row("main", 0, 64, auc=0.6), *exps, row("p16", 0, 16, split="paper", auc=0.7))))
    sweep = ["sweep", "--params", str(params), "--out", str(out), "--from"]
    assert CliRunner().invoke(app, [*sweep, str(full)]).exit_code == 0
    written = {
        name: (out / name).read_bytes() for name in ("tallrec_sweep.json", "tallrec_sweep.md", "tallrec_sweep.png")
    }
    result = CliRunner().invoke(app, [*sweep, str(few)])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert (
        "tallrec_sweep.json holds 7 run(s) and the new report would drop 6 of them (split temporal K 16 seed 0, split temporal K 16 seed 1, split temporal K 16 seed 2, ...)"
        in result.output
    )
    assert "--force" in result.output
    assert {name: (out / name).read_bytes() for name in written} == written
    assert CliRunner().invoke(app, [*sweep, str(full)]).exit_code == 0  # the same runs: rewritten
    assert CliRunner().invoke(app, [*sweep, str(more)]).exit_code == 0  # more runs
    assert "paper" in json.loads((out / "tallrec_sweep.json").read_text())
    assert CliRunner().invoke(app, [*sweep, str(full)]).exit_code == 1  # now the paper split's run would go
    for text, message in (
        ("[]", "expected a JSON object, got list: pass --force"),
        (
            '{"temporal": 1}',
            "not a report this command writes, so what replacing it would drop is unknown: pass --force",
        ),
    ):
        (out / "tallrec_sweep.json").write_text(text)
        result = CliRunner().invoke(app, [*sweep, str(full)])
        assert (
            result.exit_code == 1
            and result.output.strip().count("\n") == 0
            and f"tallrec_sweep.json: {message}" in result.output
        )
    result = CliRunner().invoke(app, [*sweep, str(few), "--force"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "tallrec_sweep.json").read_text()) == {
        "temporal": {"64": {"aucs": [0.6], "mean": 0.6, "sd": None, "seeds": [0]}}
    }


def test_set_values_are_checked_like_params(tmp_path):
    """-S values must be what params.yaml could hold: a wrong type is one line naming the key, and
    nothing is written."""
    params = write_params(tmp_path, BASE)
    saved = tmp_path / "exp.json"
    saved.write_text(json.dumps(exp_show(row("main", 0, 64, auc=0.6))))
    out = tmp_path / "reports"
    for setting, message in (
        ("sample.k=abc", "--set: sample.k: Input should be a valid integer"),
        ("instructions.split=random", "--set: instructions.split: Input should be 'temporal' or 'paper'"),
    ):
        result = CliRunner().invoke(
            app, ["sweep", "--params", str(params), "--from", str(saved), "--out", str(out), "-S", setting]
        )
        assert result.exit_code == 1 and result.output.strip().count("\n") == 0 and message in result.output, (
            result.output
        )
    assert not out.exists()
    with pytest.raises(RecpipeError, match=r"^--set: train.lr: Input should be a valid number"):
        reference_params(params, ["train.lr=fast"])
    bad = write_params(tmp_path, {**BASE, "sample": {"k": "many"}})
    with pytest.raises(RecpipeError, match=r"params.yaml: sample.k: Input should be a valid integer"):
        reference_params(bad, [])


def test_collab_rows_and_all_samples_are_rows_and_ks_of_their_own(tmp_path):
    """Collaborative runs count under `<split>+collab=<model>`; sample.k null under K `all`, last;
    experiments without the collab section count as text-only."""
    reference = flatten({**BASE, "collab": {"model": "none", "datasets": [], "tokens": ["user", "target"]}})
    text = {"collab__model": "none", "collab__datasets": [], "collab__tokens": ["user", "target"]}
    exps = [
        row("before", 0, 64, auc=0.6),  # from before the collab section
        row("mf", 0, 64, auc=0.7, **{**text, "collab__model": "mf", "collab__datasets": ["ml-100k"]}),
        row("all", 0, None, auc=0.75, **text),
    ]
    sweep = aggregate(records(exp_show(row("main", 1, 16, auc=0.5), *exps)), reference)
    assert sweep.table["temporal"][64]["aucs"] == [0.6] and sweep.table["temporal"][ALL]["aucs"] == [0.75]
    assert sweep.table["temporal+collab=mf"][64]["aucs"] == [0.7]
    assert list(sweep.table["temporal"]) == [16, 64, ALL]
    plot(sweep, {"auc_by_k": {"16": [60.0]}, "scale": 100, "methods": ["TALLRec"]}, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0
