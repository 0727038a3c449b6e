"""A sweep of TALLRec experiments (dvc exp run --queue over seed, sample.k, instructions.split and
collab.model) aggregated into reports/tallrec_sweep.{json,md,png}: the test AUC's mean and sd over
seeds per K and row (the split, `<split>+collab=<model>` with collaborative tokens), beside the
paper's figure and the history prior. K `all` is sample.k null: every training sample."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from recpipe import RecpipeError, log
from recpipe.experiments import get_path, keep_runs, records, same_value
from recpipe.io import atomic_path, read_mapping, write_json, write_png
from recpipe.markdown import table

# What a sweep varies; every other param must match. collab.datasets goes with collab.model.
SWEPT = ("instructions.split", "sample.k", "seed", "collab.model", "collab.datasets")
ALL = "all"  # K of sample.k null
AUC = ("reports/tuned.json", "auc")  # the tuned model's test AUC, written by the evaluate stage
PRIOR = ("reports/intervals.json", "history_prior", "auc")  # written by the report stage
REFERENCES = Path(__file__).parents[1] / "references"


def before_collab() -> dict:
    """The collab params an experiment run before the collab section existed lacks: their defaults
    (no collaborative tokens), so that such an experiment still counts as text-only."""
    from recpipe.experiments import flatten
    from recpipe.params.collab import CollabParams

    return {f"collab.{k}": v for k, v in flatten(CollabParams().model_dump(mode="json")).items()}


def k_order(k) -> tuple:
    """Ks in order, `all` last."""
    return (k == ALL, 0 if k == ALL else k)


@dataclass
class Sweep:
    """The aggregate: table[split][k] = {mean, sd, seeds, aucs} (AUC as a fraction), the history
    prior's test AUC per split, and notes on what was left out."""

    table: dict = field(default_factory=dict)
    prior: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def aggregate(recs: list[dict], reference: dict) -> Sweep:
    """Aggregate experiment records (see `records`) whose params equal `reference` (flattened
    params) in every key but SWEPT. Left out, and counted in the notes: records with other params,
    and records without a test AUC (queued, running or failed experiments). The same (split, K,
    seed) run more than once counts once: the newest run's AUC, with a note if the AUCs differ."""
    fixed = {k: v for k, v in reference.items() if k not in SWEPT}
    runs: dict[tuple, list[dict]] = {}
    other, unfinished = [], []
    for rec in recs:
        # An experiment from before the collab section: its defaults, where the reference has them.
        params = {**{k: v for k, v in before_collab().items() if k in reference}, **rec["params"]}
        rest = {k: v for k, v in params.items() if k not in SWEPT}
        if (
            rest.keys() != fixed.keys()
            or not all(same_value(rest[k], fixed[k]) for k in fixed)
            or any(k not in params for k in SWEPT[:3])
        ):
            other.append(rec["name"])
            continue
        auc = get_path(rec["metrics"], AUC)
        if not isinstance(auc, (int, float)) or isinstance(auc, bool):
            unfinished.append(rec["name"])
            continue
        row = str(params["instructions.split"])
        if params.get("collab.model", "none") != "none":
            row += f"+collab={params['collab.model']}"
        k = ALL if params["sample.k"] is None else int(params["sample.k"])
        key = (row, k, int(params["seed"]))
        runs.setdefault(key, []).append({**rec, "auc": float(auc), "prior": get_path(rec["metrics"], PRIOR)})
    sweep = Sweep()
    if other:
        sweep.notes.append(
            f"{len(other)} experiment(s) with other params than the reference's (beyond {', '.join(SWEPT)}) left out: {', '.join(sorted(other))}"
        )
    if unfinished:
        sweep.notes.append(
            f"{len(unfinished)} experiment(s) without a test AUC ({AUC[0]}) left out: {', '.join(sorted(unfinished))}"
        )
    priors: dict[str, list[float]] = {}
    for (split, k, seed), dups in sorted(runs.items(), key=lambda item: (item[0][0], k_order(item[0][1]), item[0][2])):
        newest = max(dups, key=lambda r: r["timestamp"] or "")
        if len({r["auc"] for r in dups}) > 1:
            seen = ", ".join(f"{r['name']} {r['auc']:.4f}" for r in dups)
            sweep.notes.append(
                f"split {split}, K {k}, seed {seed}: {len(dups)} runs with different AUCs ({seen}); the newest, {newest['name']}, counts"
            )
        cell = sweep.table.setdefault(split, {}).setdefault(k, {"seeds": [], "aucs": []})
        cell["seeds"].append(seed)
        cell["aucs"].append(newest["auc"])
        if isinstance(newest["prior"], (int, float)):
            priors.setdefault(split, []).append(float(newest["prior"]))
    for cells in sweep.table.values():
        for cell in cells.values():
            cell["mean"] = round(statistics.fmean(cell["aucs"]), 5)
            cell["sd"] = round(statistics.stdev(cell["aucs"]), 5) if len(cell["aucs"]) > 1 else None
    for split, values in priors.items():
        # The prior reads the test split only, which the swept K and seed do not change.
        sweep.prior[split] = round(statistics.fmean(values), 5)
        if max(values) - min(values) > 1e-9:
            sweep.notes.append(
                f"split {split}: the history prior's AUC differs between experiments ({min(values):.4f} to {max(values):.4f}); the mean is shown"
            )
    return sweep


def paper_line(reference: dict) -> dict[int, float]:
    """The paper's own model's AUC per K, as a fraction (the last method of the reference table)."""
    return {int(k): round(aucs[-1] / reference["scale"], 5) for k, aucs in reference["auc_by_k"].items()}


def render(sweep: Sweep, reference: dict) -> str:
    paper = paper_line(reference)
    method = reference["methods"][-1]
    rows = []
    for split, cells in sorted(sweep.table.items()):
        for k, cell in sorted(cells.items(), key=lambda item: k_order(item[0])):
            sd = f" ± {cell['sd']:.4f}" if cell["sd"] is not None else ""
            prior = sweep.prior.get(split)
            rows.append(
                [
                    split,
                    str(k),
                    str(len(cell["seeds"])),
                    f"{cell['mean']:.4f}{sd}",
                    f"{paper[k]:.4f}" if k in paper else "n/a",
                    f"{prior:.4f}" if prior is not None else "n/a",
                ]
            )
    lines = [
        "# TALLRec sweep: test AUC against K",
        "",
        "Mean ± sample standard deviation over seeds of the LoRA-tuned model's test AUC, per split and",
        f"number of training shots K; beside it {method} as published ({reference['table']} of arXiv",
        f"{reference['arxiv']}, on its own split of {reference['dataset']}) and the history prior (the share of liked",
        "items in the prompt's history, used alone as a score) on the same test split.",
        "",
        *table(["split", "K", "seeds", "AUC (mean ± sd)", "paper", "history prior"], rows),
        "",
        "![AUC against K](tallrec_sweep.png)",
    ]
    if sweep.notes:
        lines += ["", "## Left out", "", *(f"- {note}" for note in sweep.notes)]
    return "\n".join(lines) + "\n"


def plot(sweep: Sweep, reference: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colors = dict(zip(sorted(sweep.table), ["tab:blue", "tab:orange", "tab:green", "tab:red"] * 4))
    numbered = [k for cells in sweep.table.values() for k in cells if k != ALL] + [
        int(k) for k in paper_line(reference)
    ]
    at_all = 4 * max(numbered, default=256)  # where `all` sits on the K axis
    for split, cells in sorted(sweep.table.items()):
        ks = sorted(cells, key=k_order)
        xs = [at_all if k == ALL else k for k in ks]
        for k, x in zip(ks, xs):
            ax.scatter([x] * len(cells[k]["aucs"]), cells[k]["aucs"], color=colors[split], alpha=0.5, s=14)
        ax.plot(
            xs,
            [cells[k]["mean"] for k in ks],
            color=colors[split],
            marker="o",
            label=f"recpipe, {split} split (mean; dots: seeds)",
        )
        if split in sweep.prior:
            ax.axhline(sweep.prior[split], color=colors[split], linestyle=":", label=f"history prior, {split} split")
    paper = paper_line(reference)
    ax.plot(
        sorted(paper),
        [paper[k] for k in sorted(paper)],
        color="black",
        linestyle="--",
        marker="s",
        label=f"paper: {reference['methods'][-1]}",
    )
    ax.set_xscale("log", base=2)
    if any(ALL in cells for cells in sweep.table.values()):
        ticks = sorted({*numbered, at_all})
        ax.set_xticks(ticks, ["all" if t == at_all else str(t) for t in ticks])
    ax.set_xlabel("K (training shots)")
    ax.set_ylabel("test AUC")
    ax.legend(fontsize="small")
    fig.tight_layout()
    write_png(fig, path)
    plt.close(fig)


def runs(table: dict) -> set[tuple[str, ...]]:
    """The runs a sweep table (tallrec_sweep.json's content) holds: one per split, K and seed."""
    return {
        (f"split {split}", f"K {k}", f"seed {seed}")
        for split, cells in table.items()
        for k, cell in cells.items()
        for seed in cell["seeds"]
    }


def write_sweep(exp: list, params: dict, out_dir: str | Path, reference: str = "tallrec", force: bool = False) -> Sweep:
    """Aggregate `exp` (dvc exp show --json) against the flattened `params` and write
    tallrec_sweep.json, .md and .png to out_dir; not over a tallrec_sweep.json holding runs this
    one lacks, unless `force`."""
    out = Path(out_dir)
    sweep = aggregate(records(exp), params)
    if not sweep.table:
        raise RecpipeError(
            "no finished experiment matches the reference params: "
            + ("; ".join(sweep.notes) or "dvc exp show lists none")
        )
    keep_runs(out / "tallrec_sweep.json", runs, sweep.table, force)
    ref = read_mapping(REFERENCES / f"{reference}.yaml")
    write_json(sweep.table, out / "tallrec_sweep.json")
    with atomic_path(out / "tallrec_sweep.md") as tmp:
        tmp.write_text(render(sweep, ref))
    plot(sweep, ref, out / "tallrec_sweep.png")
    for note in sweep.notes:
        log.warning("sweep: %s", note)
    log.info("sweep: wrote %s/tallrec_sweep.{json,md,png}", out)
    return sweep
