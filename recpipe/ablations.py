"""RecSysLLM's ablation and LoRA rank sweep, aggregated from DVC experiments (`dvc exp show
--json`) into reports/recsysllm_ablations.{json,md} and reports/recsysllm_lora_rank.png.

The reference is the full recipe: params.yaml with the -S settings its experiments were run with
(pretraining on, P5 on a dataset). An experiment whose params differ from it in the keys of one
switch only (seed aside) is that switch's row; one that differs in the LoRA ranks only is a point
of the rank sweep; any other is left out, with a note. Each row holds, per metric, the mean and
sample sd over its seeds and its difference from the full recipe: paired over the seeds both
have (the same seed: the same samples and test cases), else the difference of the means."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from recpipe import RecpipeError, log
from recpipe.experiments import get_path, keep_runs, records, same_value
from recpipe.io import atomic_path, write_json, write_png
from recpipe.markdown import table

# Each switch: the keys that turn it (set together), one ablation row per setting.
SWITCHES = {
    "behaviour sampling": ("recsysllm.sampling.mode",),
    "masking": ("recsysllm.whole_entities",),
    "span order": ("recsysllm.order",),
    "2D positions": ("recsysllm.positions_2d",),
    "dynamic positions": ("recsysllm.dynamic_positions",),
    "pretraining": ("train.init", "p5.train.init"),
}
RANKS = {"tallrec": "lora.rank", "p5": "p5.lora.rank"}  # the rank each model's metrics follow
SEED = "seed"
FULL = "full recipe"


def metrics(dataset: str) -> dict[str, tuple[str, str, tuple]]:
    """Metric name -> (model, metrics file, keys in it): the P5 report's sequential and rating
    families, seen and unseen templates, and TALLRec's test AUC."""
    out = {"TALLRec AUC": ("tallrec", "reports/tuned.json", ("auc",))}
    for family, names in (
        ("sequential", ("hr@5", "ndcg@5", "hr@10", "ndcg@10")),
        ("rating", ("rmse", "mae", "yes_no_auc")),
    ):
        for group in ("seen", "unseen"):
            for name in names:
                out[f"{family} {group} {name}"] = ("p5", f"reports/p5/{dataset}/families/{family}.json", (group, name))
    return out


def classify(params: dict, reference: dict) -> tuple[str, str] | None:
    """(switch, setting) of an experiment's flattened params against the full recipe's: (FULL,
    "") when equal, ("lora rank", "") when only ranks differ, None when several switches (or
    other params) differ."""
    keys = (set(params) | set(reference)) - {SEED}
    diff = sorted(k for k in keys if k not in params or k not in reference or not same_value(params[k], reference[k]))
    if not diff:
        return FULL, ""
    if set(diff) <= set(RANKS.values()):
        return "lora rank", ""
    for switch, switched in SWITCHES.items():
        if set(diff) <= set(switched):
            return switch, ", ".join(f"{k}={params.get(k)}" for k in diff)
    return None


def summary(values: dict[int, float]) -> dict:
    """{seed: value} -> mean, sample sd (None for one seed), n and the values by seed."""
    v = [values[s] for s in sorted(values)]
    return {
        "mean": round(statistics.fmean(v), 5),
        "sd": round(statistics.stdev(v), 5) if len(v) > 1 else None,
        "n": len(v),
        "by_seed": {str(s): round(values[s], 5) for s in sorted(values)},
    }


def versus(row: dict[int, float], full: dict[int, float]) -> dict | None:
    """The row's difference from the full recipe: paired over shared seeds, else of the means."""
    if not row or not full:
        return None
    shared = sorted(set(row) & set(full))
    if shared:
        return {"diff": round(statistics.fmean(row[s] - full[s] for s in shared), 5), "paired_seeds": shared}
    return {"diff": round(statistics.fmean(row.values()) - statistics.fmean(full.values()), 5), "paired_seeds": []}


@dataclass
class Ablations:
    """rows: one per (switch, setting), the full recipe first, each {switch, setting, seeds,
    metrics: {name: summary}, vs_full: {name: versus}}; ranks: {metric: {rank: summary}};
    notes: what was left out."""

    rows: list[dict] = field(default_factory=list)
    ranks: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def aggregate(recs: list[dict], reference: dict) -> Ablations:
    """Aggregate experiment records (recpipe.experiments.records) against the full recipe's
    flattened params. The same row and seed run twice counts once: the newest run."""
    datasets = reference.get("p5.datasets")
    if not isinstance(datasets, list) or len(datasets) != 1:
        raise RecpipeError(
            f"p5.datasets: the ablation reads one P5 dataset's metrics, the reference params list {datasets!r} (set it with -S 'p5.datasets=[ml-100k]')"
        )
    wanted = metrics(datasets[0])
    runs: dict[tuple[str, str], dict[int, dict]] = {}
    other, empty = [], []
    for rec in recs:
        where = classify(rec["params"], reference)
        seed = rec["params"].get(SEED)
        if where is None or not isinstance(seed, int):
            other.append(rec["name"])
            continue
        values = {name: _number(get_path(rec["metrics"], (path, *keys))) for name, (_, path, keys) in wanted.items()}
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            empty.append(rec["name"])
            continue
        if where[0] == "lora rank":  # each model's metrics at its own rank
            where = ("lora rank", ",".join(str(rec["params"].get(k)) for k in RANKS.values()))
        kept = runs.setdefault(where, {})
        if seed not in kept or (rec["timestamp"] or "") > (kept[seed]["timestamp"] or ""):
            kept[seed] = {"timestamp": rec["timestamp"], "values": values, "params": rec["params"]}
    out = Ablations()
    if other:
        out.notes.append(
            f"{len(other)} experiment(s) differing from the full recipe in more than one switch (or in other params) left out: {', '.join(sorted(other))}"
        )
    if empty:
        out.notes.append(
            f"{len(empty)} experiment(s) without any of the metrics left out (queued, running or failed): {', '.join(sorted(empty))}"
        )
    if (FULL, "") not in runs:
        out.notes.append("no finished full-recipe experiment: no differences to show")

    def by_metric(seeds: dict[int, dict]) -> dict[str, dict[int, float]]:
        return {name: {s: r["values"][name] for s, r in seeds.items() if name in r["values"]} for name in wanted}

    full = by_metric(runs.get((FULL, ""), {}))
    order = [FULL, *SWITCHES]
    for (switch, setting), seeds in sorted(
        runs.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else len(order), kv[0][1])
    ):
        if switch == "lora rank":
            continue
        cells = by_metric(seeds)
        out.rows.append(
            {
                "switch": switch,
                "setting": setting,
                "seeds": sorted(seeds),
                "metrics": {name: summary(v) for name, v in cells.items() if v},
                "vs_full": {
                    name: d for name, v in cells.items() if switch != FULL and (d := versus(v, full[name])) is not None
                },
            }
        )
    for name, (model, _, _) in wanted.items():
        points: dict[int, dict[int, float]] = {}
        for (switch, _), seeds in runs.items():
            if switch not in (FULL, "lora rank"):
                continue
            for seed, r in seeds.items():
                rank = r["params"].get(RANKS[model])
                if name in r["values"] and isinstance(rank, int):
                    points.setdefault(rank, {})[seed] = r["values"][
                        name
                    ]  # a rank's repeat of the same seed: the same run
        if len(points) > 1:
            out.ranks[name] = {rank: summary(v) for rank, v in sorted(points.items())}
    return out


def _cell(s: dict | None, d: dict | None) -> str:
    if s is None:
        return "n/a"
    text = f"{s['mean']:.4f}" + (f" ± {s['sd']:.4f}" if s["sd"] is not None else "")
    if d is not None:
        text += f" ({d['diff']:+.4f}{'' if d['paired_seeds'] else ', unpaired'})"
    return text


def render(ab: Ablations, dataset: str) -> str:
    names = list(metrics(dataset))
    rows = [
        [
            r["switch"],
            r["setting"] or "-",
            str(len(r["seeds"])),
            *(_cell(r["metrics"].get(n), r["vs_full"].get(n)) for n in names),
        ]
        for r in ab.rows
    ]
    lines = [
        f"# RecSysLLM ablations on {dataset}",
        "",
        "One row per switch setting, every other param as in the full recipe. Each cell: mean ± sample",
        "sd over the row's seeds, and in brackets its difference from the full recipe, paired over the",
        "seeds both ran (the same seed: the same samples and test cases; `unpaired`: the difference of",
        "the means). A one-seed row has no sd of its own: the full recipe's sd beside it is the spread",
        "to read its difference against. HR and NDCG are fractions, RMSE and MAE rating units, yes_no_auc the rating family's yes/no prompts ranked by the probability of yes.",
        "",
        *table(["switch", "setting", "seeds", *names], rows),
    ]
    if ab.ranks:
        lines += ["", "## LoRA rank", "", "![metrics against LoRA rank](recsysllm_lora_rank.png)", ""]
        ranks = sorted({rank for points in ab.ranks.values() for rank in points})
        lines += table(
            ["metric", *(f"rank {r}" for r in ranks)],
            [[n, *(_cell(points.get(r), None) for r in ranks)] for n, points in ab.ranks.items()],
        )
    if ab.notes:
        lines += ["", "## Left out", "", *(f"- {note}" for note in ab.notes)]
    return "\n".join(lines) + "\n"


PANELS = (("TALLRec", ("TALLRec AUC",)), ("sequential", ("hr@10", "ndcg@10")), ("rating", ("rmse", "mae")))


def plot_ranks(ranks: dict, path: Path) -> None:
    """One panel per model/family: each metric's mean against the rank (log scale), seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (title, [n for n in ranks if any(n.startswith(title) and n.endswith(m) for m in suffixes)])
        for title, suffixes in PANELS
    ]
    panels = [(title, names) for title, names in panels if names]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (title, names) in zip(axes[0], panels):
        for name in names:
            points = ranks[name]
            xs = sorted(points)
            line = ax.plot(
                xs, [points[x]["mean"] for x in xs], marker="o", label=name.removeprefix(f"{title} ") or name
            )[0]
            for x in xs:
                seeds = list(points[x]["by_seed"].values())
                ax.scatter([x] * len(seeds), seeds, color=line.get_color(), alpha=0.4, s=12)
        ax.set_xscale("log", base=2)
        ticks = sorted({x for name in names for x in ranks[name]})
        ax.set_xticks(ticks, [str(t) for t in ticks])  # the ranks themselves, not powers of two
        ax.minorticks_off()
        ax.set_xlabel("LoRA rank (dots: seeds)")
        ax.set_title(title)
        ax.legend(fontsize="small")
    fig.tight_layout()
    write_png(fig, path)
    plt.close(fig)


def runs(report: dict) -> set[tuple[str, ...]]:
    """The runs an ablation report (recsysllm_ablations.json's content) holds: each row's seeds,
    and each LoRA rank's seeds over all metrics (the full recipe's also as points of its rank)."""
    dataset = report["dataset"]
    held = {
        (dataset, row["switch"] + (f" ({row['setting']})" if row["setting"] else ""), f"seed {seed}")
        for row in report["rows"]
        for seed in row["seeds"]
    }
    for points in report["lora_rank"].values():
        held |= {
            (dataset, f"LoRA rank {rank}", f"seed {seed}")
            for rank, summary in points.items()
            for seed in summary["by_seed"]
        }
    return held


def write_ablations(exp: list, reference: dict, out_dir: str | Path, force: bool = False) -> Ablations:
    """Aggregate `exp` (dvc exp show --json) against the full recipe's flattened params and write
    recsysllm_ablations.json and .md (and recsysllm_lora_rank.png when ranks were swept) to
    out_dir; not over a recsysllm_ablations.json holding runs this one lacks, unless `force`."""
    out = Path(out_dir)
    ab = aggregate(records(exp), reference)
    if not ab.rows and not ab.ranks:
        raise RecpipeError(
            "no finished experiment is the full recipe, one switch away from it or a LoRA rank of it: "
            + ("; ".join(ab.notes) or "dvc exp show lists none")
        )
    dataset = reference["p5.datasets"][0]
    report = {
        "dataset": dataset,
        "rows": ab.rows,
        "lora_rank": {n: {str(r): s for r, s in p.items()} for n, p in ab.ranks.items()},
        "notes": ab.notes,
    }
    keep_runs(out / "recsysllm_ablations.json", runs, report, force)
    write_json(report, out / "recsysllm_ablations.json")
    with atomic_path(out / "recsysllm_ablations.md") as tmp:
        tmp.write_text(render(ab, dataset))
    if ab.ranks:
        plot_ranks(ab.ranks, out / "recsysllm_lora_rank.png")
    for note in ab.notes:
        log.warning("ablations: %s", note)
    log.info(
        "ablations: wrote %s/recsysllm_ablations.{json,md}%s", out, " and recsysllm_lora_rank.png" if ab.ranks else ""
    )
    return ab
