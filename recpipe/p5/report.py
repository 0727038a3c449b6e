"""The P5 report: our metrics per task family, on seen and on unseen (zero-shot) prompt templates,
laid out like RecSysLLM's tables (arXiv 2308.10837, Tables 2 and 4-7), beside the paper's rows when
the dataset is one the paper reports on and beside our baselines (popularity, SASRec, BPR-MF).

Metric names are ours: rmse, mae, yes_no_auc (the rating family's yes/no prompts ranked by the
probability of yes; the paper has no such column), hr@k, ndcg@k, bleu (BLEU-4), bleu2 (BLEU-2,
the paper's review table), rouge1, rouge2, rougeL. BLEU and ROUGE are percentages (0-100), as in
the paper."""

from __future__ import annotations

import math
from pathlib import Path

from recpipe import RecpipeError, log
from recpipe.io import atomic_path, read_mapping, read_parquet
from recpipe.markdown import params_section, table
from recpipe.metrics import hit_rate_interval, mcnemar_p

REFERENCES = Path(__file__).parents[1] / "references"

# Each family's table columns, in the paper's order. The paper's review table has BLEU-2 and ours
# BLEU-4: two columns, so the two are never read as one.
COLUMNS = {
    "rating": ("rmse", "mae", "yes_no_auc"),
    "sequential": ("hr@5", "ndcg@5", "hr@10", "ndcg@10"),
    "explanation": ("bleu", "rouge1", "rouge2", "rougeL"),
    "review": ("bleu2", "bleu", "rouge1", "rouge2", "rougeL"),
    "direct": ("hr@1", "hr@5", "ndcg@5", "hr@10", "ndcg@10"),
}
TITLES = {
    "rating": "Rating prediction",
    "sequential": "Sequential recommendation",
    "explanation": "Explanation generation",
    "review": "Review summarization",
    "direct": "Direct recommendation",
}
LABELS = {
    "rmse": "RMSE",
    "mae": "MAE",
    "yes_no_auc": "yes/no AUC",
    "bleu": "BLEU-4",
    "bleu2": "BLEU-2",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
}
PERCENT = {"bleu", "bleu2", "rouge1", "rouge2", "rougeL"}
COUNTS = {"n", "unparsable", "short_lists"}
DASH = "–"


def load_references(path=None) -> dict:
    """The published numbers (default: the packaged recpipe/references/p5.yaml)."""
    path = Path(path) if path is not None else REFERENCES / "p5.yaml"
    ref = read_mapping(path)
    if not isinstance(ref.get("datasets"), dict):
        raise RecpipeError(f"{path}: expected a mapping with a 'datasets' mapping (dataset -> family -> rows)")
    return ref


def _missing(value) -> bool:
    # NaN is what an undefined metric becomes (e.g. RMSE when no answer parsed): no value.
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(metric: str, value) -> str:
    if _missing(value):
        return DASH
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if metric in COUNTS:
        return f"{value:.0f}"
    return f"{value:.2f}" if metric in PERCENT else f"{value:.4f}"


def _label(metric: str) -> str:
    return LABELS.get(metric, metric.upper() if "@" in metric else metric)


def _ranking_cases(group: dict | None) -> float:
    # A family that mixes kinds (direct: ranking and yes/no prompts) counts its ranking cases in n_item.
    n = (group or {}).get("n_item", (group or {}).get("n"))
    return math.inf if _missing(n) else n


def _protocol(ours: dict, users, sampled=None, split: str = "test") -> list[str]:
    counts = []
    for family in COLUMNS:
        if family in ours:
            seen, unseen = (ours[family].get(kind) or {} for kind in ("seen", "unseen"))
            counts.append(f"{family} {_cell('n', seen.get('n'))} / {_cell('n', unseen.get('n'))}")
    lines = [
        "## Protocol",
        "",
        (
            "Sequential and direct recommendation hold out each user's last interaction (leave-one-out, in time order); "
            "rating, explanation and review split all interactions by time. Items already in a user's history are never ranked. "
            "Where a family's n is below its number of test cases, the cases scored are a subsample."
        ),
        "",
        f"{'Test cases' if split == 'test' else 'Validation samples'} n (seen / unseen prompts): {'; '.join(counts) if counts else DASH}.",
    ]
    if split == "valid":
        lines.append(
            "These are validation figures (p5.evaluate_split: valid): the held-out samples that choose settings, asked with "
            "seen templates only. The baselines are scored on the test cases, so none is shown beside them."
        )
    # The baselines rank every user's leave-one-out case, or the same sample the LLM was asked.
    ranked = [f for f in ("sequential", "direct") if f in ours]
    if isinstance(sampled, int) and isinstance(users, int) and ranked:
        lines.append(
            f"The baselines are scored on the same cases as recpipe: the {sampled} sampled sequential users (of {users} "
            "with a leave-one-out test case; their scores over all users are in baselines.json as sequential_all_users) "
            "and the same direct candidate lists."
        )
    elif isinstance(users, int) and ranked:
        fewer = [f for f in ranked if any(_ranking_cases(ours[f].get(kind)) < users for kind in ("seen", "unseen"))]
        lines.append(
            f"{users} users have a leave-one-out test case, all of them ranked by the baselines; "
            + (
                f"recpipe's {' and '.join(fewer)} rankings cover a subsample of them."
                if fewer
                else f"recpipe's {' and '.join(ranked)} rankings cover all of them."
            )
        )
    return lines


def _paper_note(dataset: str, paper: dict | None, references: dict) -> str:
    source = f"RecSysLLM (arXiv {references.get('arxiv', '2308.10837')})"
    if paper is None:
        known = ", ".join(references.get("datasets") or {}) or "none"
        return (
            f"{source} reports no numbers for {dataset} (only for {known}), so no paper rows are shown: "
            "its numbers come from other models on other datasets and do not compare with these."
        )
    return (
        f"Paper rows: {source}, copied as printed for this dataset. They come from other models (P5, RecSysLLM and "
        "classic baselines) on P5's preparation of the data, with its own splits and sampling: they show the range "
        "to expect, not a matched comparison. In the prompts column, seen = templates used in training, "
        "unseen = zero-shot templates, n/a = no prompts."
    )


BASELINE_NAMES = {"popularity": "Popularity", "sasrec": "SASRec", "bprmf": "BPR-MF"}


def _interval_line(family: str, columns: list[str], rows: list[tuple], baselines: dict) -> list[str]:
    """HR at the table's largest k, with its 95% interval, for each of this run's rows."""
    hits = [c for c in columns if c.startswith("hr@")]
    if not hits:
        return []
    metric = max(hits, key=lambda c: int(c.split("@")[1]))
    baseline_cases = baselines.get(f"{family}_cases") or baselines.get("users")  # None: every user was ranked
    parts = []
    for method, source, prompts, _, values, _ in rows:
        n = _ranking_cases(values) if prompts in ("seen", "unseen") else baseline_cases
        hr = values.get(metric)
        if source != "this run" or _missing(hr) or not isinstance(n, int) or n <= 0:
            continue
        low, high = hit_rate_interval(hr, n)
        parts.append(f"{method} {hr:.4f} [{low:.4f}, {high:.4f}] (n {n})")
    if not parts:
        return []
    return [
        f"{_label(metric)} with its 95% interval (Wilson score, over the row's n ranking cases): "
        + "; ".join(parts)
        + ".",
        "",
    ]


def paired_tests(ours, baselines, k: int = 10) -> dict[str, str]:
    """Per ranking family, recpipe (seen and unseen prompts apart) against each baseline on the
    cases both ranked: how many cases only the one or only the other hits in its top k, and the
    exact McNemar test's p (a two-sided binomial test on those cases). `ours`: p5_evaluate's
    predictions; `baselines`: the baselines stage's (polars frames). Pairing the cases tells apart
    differences that two overlapping intervals cannot."""
    import polars as pl

    def hits(frame):
        return frame.with_columns(hit=pl.col("ranked").list.head(k).list.contains(pl.col("item_id"))).select(
            "family", "user_id", "item_id", "hit", *[c for c in ("seen", "method") if c in frame.columns]
        )

    ours, baselines = hits(ours.filter(pl.col("kind") == "item")), hits(baselines)
    lines = {}
    for family in ("sequential", "direct"):
        parts = []
        for seen in (True, False):
            mine = ours.filter((pl.col("family") == family) & (pl.col("seen") == seen)).drop("seen")
            for method in sorted(set(baselines.filter(pl.col("family") == family)["method"])):
                theirs = baselines.filter((pl.col("family") == family) & (pl.col("method") == method)).drop("method")
                both = mine.join(theirs, on=["family", "user_id", "item_id"], suffix="_b")
                if not both.height:
                    continue
                only_ours, only_theirs = (
                    int((both["hit"] & ~both["hit_b"]).sum()),
                    int((~both["hit"] & both["hit_b"]).sum()),
                )
                p = mcnemar_p(only_ours, only_theirs)
                kind = "seen" if seen else "unseen"
                parts.append(
                    f"recpipe ({kind} prompts) {only_ours} vs {BASELINE_NAMES.get(method, method)} {only_theirs}, p {p:.3f} (n {both.height})"
                )
        if parts:
            lines[family] = (
                f"Paired on the same cases, HR@{k} (cases only one of the two hits, exact McNemar p): "
                + "; ".join(parts)
                + "."
            )
    return lines


def _section(
    family: str, mine: dict, baselines: dict, paper_rows: list[dict], references: dict, paired: str | None = None
) -> list[str]:
    hints = family == "explanation"
    # (method, from, prompts, hints, values, note)
    rows = [(r["method"], "paper", r.get("prompts", "n/a"), r.get("hints"), r, r.get("note")) for r in paper_rows]
    for name, per_family in baselines.items():
        if isinstance(per_family, dict) and isinstance(per_family.get(family), dict):
            rows.append((BASELINE_NAMES.get(name, name), "this run", "n/a", None, per_family[family], None))
    for kind in ("seen", "unseen"):
        rows.append((f"recpipe ({kind} prompts)", "this run", kind, None, mine.get(kind) or {}, None))

    columns = [c for c in COLUMNS[family] if any(not _missing(row[4].get(c)) for row in rows)]  # row[4]: values
    paper_table = references.get("tables", {}).get(family)
    title = f"## {TITLES[family]}" + (f" (RecSysLLM {paper_table})" if paper_rows and paper_table else "")
    lines = [title, ""]
    if not columns:
        lines += [f"No metric of this table ({', '.join(_label(c) for c in COLUMNS[family])}) has a value.", ""]
    else:
        head = ["method", "from", "prompts"] + (["hints"] if hints else []) + [_label(c) for c in columns]
        notes, cells = [], []
        for method, source, prompts, hint, values, note in rows:
            if note:
                notes.append(note)
                method = f"{method} [{len(notes)}]"
            hint_cell = [{True: "with", False: "without"}.get(hint, DASH)] if hints else []
            cells.append([method, source, prompts, *hint_cell, *(_cell(c, values.get(c)) for c in columns)])
        lines += [*table(head, cells), ""]
        lines += [f"[{i}] {note}." for i, note in enumerate(notes, 1)]
        if notes:
            lines.append("")
        lines += _interval_line(family, columns, rows, baselines)
        lines += [paired, ""] if paired else []
    if family in ("explanation", "review"):
        lines += ["BLEU and ROUGE are percentages.", ""]
    if hints:
        lines += [
            "recpipe's rows pool all of the family's templates; whether a template gives a hint (`{hint}`) is up to the templates file.",
            "",
        ]
    if family == "review" and paper_rows:
        lines += [
            "The paper's review table reports BLEU-2; recpipe's BLEU is BLEU-4, so the two columns do not compare.",
            "",
        ]
    # Our metrics the paper's table has no column for (parse failures, yes/no accuracy, HR@1, ...).
    # n and the per-kind counts (n_rating, n_item, ...) are bookkeeping, not results.
    extra = [
        m
        for m in dict.fromkeys([*(mine.get("seen") or {}), *(mine.get("unseen") or {})])
        if m not in columns and not (m == "n" or m.startswith("n_"))
    ]
    if extra:
        seen, unseen = mine.get("seen") or {}, mine.get("unseen") or {}
        lines += [
            "Also measured by recpipe (seen / unseen): "
            + "; ".join(f"{m} {_cell(m, seen.get(m))} / {_cell(m, unseen.get(m))}" for m in extra)
            + ".",
            "",
        ]
    return lines


def _openp5_section(dataset: str, mine: dict | None, indexing: str, references: dict) -> list[str]:
    """OpenP5's published sequential figures per item indexing, beside this run's seen-prompt ones
    (the run has one indexing, `p5.indexing`); nothing when OpenP5 has no rows for the dataset."""
    ref = references.get("openp5") or {}
    rows = ((ref.get("datasets") or {}).get(dataset) or {}).get("sequential") or []
    if not rows:
        return []
    columns = COLUMNS["sequential"]
    cells = [
        [
            f"OpenP5 ({ref.get('model', '?')}, {ref.get('prompts', '?')} prompts)",
            r["indexing"],
            "published",
            *(_cell(c, r.get(c)) for c in columns),
        ]
        for r in rows
    ]
    seen = (mine or {}).get("seen") or {}
    cells.append(["recpipe (seen prompts)", indexing, "this run", *(_cell(c, seen.get(c)) for c in columns)])
    return [
        f"## Item indexing (OpenP5, arXiv {ref.get('arxiv', '2306.11134')})",
        "",
        *table(["method", "indexing", "from", *(_label(c) for c in columns)], cells),
        "",
        (
            "OpenP5's rows are its published sequential recommendation results, one per item indexing. Its split, data "
            "preparation, prompts, model and test users are its own, not recpipe's: they show what each indexing reached "
            "there, not a matched comparison. This run writes items as `p5.indexing` says; each other indexing is a run of its own (`dvc exp run -S p5.indexing=sequential`)."
        ),
        "",
        (
            "Sequential indexing numbers items in order of first appearance in the users' histories, so consecutive ids give "
            "away sequence order (P5's known leak): a model can learn that the next item's id is often the last one's plus one. "
            "recpipe numbers items from training interactions only, so no valid or test item is numbered by its place, but the "
            "order of the training histories still shows in the ids."
        ),
        "",
    ]


def p5_tables(
    dataset: str,
    ours: dict,
    baselines: dict | None,
    references: dict,
    paired: dict[str, str] | None = None,
    indexing: str = "names",
    split: str = "test",
) -> str:
    """Markdown: the protocol, then one table per family in `ours` ({family: {"seen": {...}, "unseen": {...}}}),
    with paired_tests' line for that family under it when given, and OpenP5's item indexings beside
    the sequential figures of this run's `indexing` where OpenP5 reports the dataset. split: which
    held-out split `ours` scored (p5.evaluate_split)."""
    unknown = [f for f in ours if f not in COLUMNS]
    if unknown:
        raise RecpipeError(f"p5 report: unknown task families {unknown} (known: {list(COLUMNS)})")
    if baselines is not None and not isinstance(baselines, dict):
        raise RecpipeError(
            f"p5 report: baselines must map a baseline name to its per-family metrics, got {type(baselines).__name__}"
        )
    paper = (references.get("datasets") or {}).get(dataset)
    lines = [
        *_protocol(ours, (baselines or {}).get("users"), (baselines or {}).get("sequential_cases"), split),
        "",
        _paper_note(dataset, paper, references),
        "",
    ]
    for family in COLUMNS:
        if family in ours:
            lines += _section(
                family,
                ours[family],
                baselines or {},
                (paper or {}).get(family) or [],
                references,
                (paired or {}).get(family),
            )
        if family == "sequential" and family in ours:
            lines += _openp5_section(dataset, ours[family], indexing, references)
    return "\n".join(lines)


def _check_family(where: str, metrics) -> dict:
    if (
        not isinstance(metrics, dict)
        or not set(metrics) <= {"seen", "unseen"}
        or not all(isinstance(v, dict) for v in metrics.values())
    ):
        raise RecpipeError(f'{where}: expected {{"seen": {{metric: value}}, "unseen": {{metric: value}}}}')
    return metrics


def read_ours(path: str | Path) -> dict:
    """Our metrics: a directory of `<family>.json` files, or one JSON file keyed by family."""
    path = Path(path)
    if path.is_dir():
        files = [path / f"{family}.json" for family in COLUMNS if (path / f"{family}.json").is_file()]
        if not files:
            raise RecpipeError(f"{path}: no metrics files (expected <family>.json, family one of {list(COLUMNS)})")
        return {f.stem: _check_family(str(f), read_mapping(f, "p5_evaluate")) for f in files}
    return {family: _check_family(f"{path}: {family}", m) for family, m in read_mapping(path, "p5_evaluate").items()}


def write_p5_report(
    dataset,
    ours_path_or_dir,
    baselines_path,
    out_path,
    params_summary: dict,
    predictions: dict | None = None,
    indexing: str = "names",
    split: str = "test",
) -> str:
    """Read our per-family metrics and the baselines' (baselines_path may be None), write the markdown
    report to out_path and return it. predictions: {"recpipe": p5_evaluate's predictions.parquet,
    "baselines": the baselines stage's}, for the paired tests (None: none); indexing and split: the
    run's p5.indexing and p5.evaluate_split. Atomic: on any error an old report stays as it was and no temporary file is left."""

    ours = read_ours(ours_path_or_dir)
    baselines = read_mapping(baselines_path, "baselines") if baselines_path is not None else None
    paired = None
    if predictions:
        for name, path in predictions.items():
            if not Path(path).is_file():
                raise RecpipeError(
                    f"p5 report: {path} not found (the {name} predictions; run the stage that makes them)"
                )
        paired = paired_tests(
            read_parquet(predictions["recpipe"], "p5_evaluate"), read_parquet(predictions["baselines"], "baselines")
        )
    text = "\n".join(
        [
            f"# recpipe P5 report: {dataset}",
            "",
            p5_tables(dataset, ours, baselines, load_references(), paired, indexing, split),
            *params_section(params_summary),
        ]
    )
    out = Path(out_path)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    log.info("p5 report: wrote %s", out)
    return text
