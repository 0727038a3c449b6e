"""Score a causal LM (base or LoRA-tuned) on the test rows of the P5 families, seen and unseen
templates apart. How a row is scored follows its kind (recpipe.families.KINDS):

    kind     how the answer is produced                  metrics (names in the result)
    rating   the mean rating under the model's           rmse, mae, clamped, unparsable, unparsable_rate
             probabilities of writing each whole rating
             in the range (rating_scoring="expected"),
             or greedy text, first number (parse_rating)
    yes_no   the model's probability of "yes" against    yes_no_accuracy (yes at 0.5 or more), yes_no_auc,
             "no" (rating_scoring="expected"), or         yes_no_unparsable, yes_no_unparsable_rate
             greedy text, first word
    item     trie-constrained beam search (ranking), or  hr@k, ndcg@k (k in 1, 5, 10 up to k), validity,
             every candidate scored: a direct prompt's   short_lists
             list (direct_ranking="likelihood"), or every
             item outside the user's history
             (sequential_ranking="likelihood")
    text     greedy text                                 bleu, rouge1, rouge2, rougeL

Every group also has n (its test prompts) and n_<kind> for each kind it holds: a family mixes
kinds (rating has number and yes/no templates, review text and rating, direct item and yes/no),
and each kind's metric names are its own. BLEU (sacrebleu's corpus BLEU-4) and ROUGE F (rouge-score,
stemmed, averaged over prompts) are in percent, as P5 and RecSysLLM print them; the rest are
fractions or rating units. Everything is rounded to 4 decimals.

Ranking excludes the user's history (the report's baselines do the same): beam search may not
write a history item (each prompt searches ItemTrie.without(history)) and likelihood ranking does
not score one, so every list holds k items whenever the user has k unrated items. short_lists
counts the item rows whose list is shorter than k (expected 0).

Entry points: evaluate_families (frames in memory) and evaluate_p5 (the p5_evaluate stage's files);
predict (answers, one row per prompt) and family_metrics (from those rows) are their two halves."""

from __future__ import annotations

import math
import time
from pathlib import Path

import polars as pl

from recpipe import RecpipeError, log
from recpipe.data.splits import loo_histories
from recpipe.io import atomic_dir, read_parquet, write_json, write_parquet
from recpipe.metrics import (
    ranking_metrics,
    rating_metrics,
    text_metrics,
    yes_no_metrics,
)
from recpipe.model.decoding import (
    ItemTrie,
    answer_probabilities,
    constrained_beams,
    expected_ratings,
    generate,
    likelihood_ranking,
    top_items,
)
from recpipe.p5.families import FAMILIES, KINDS, NO, YES, rating_text
from recpipe.params.p5 import P5Params


def _tries(rows: pl.DataFrame, names: dict[int, str], tokenizer) -> list[ItemTrie]:
    """Per row: the trie over every item, or over the row's own candidates when it has them
    (direct). Seen and unseen rows of a case share their candidates, so each trie is built once."""
    everything = None
    built: dict[tuple[int, ...], ItemTrie] = {}
    tries = []
    for candidates in rows["candidates"].to_list():
        if candidates is None:
            if everything is None:
                everything = ItemTrie(names, tokenizer)
            tries.append(everything)
        else:
            key = tuple(candidates)
            if key not in built:
                built[key] = ItemTrie({i: names[i] for i in key}, tokenizer)
            tries.append(built[key])
    return tries


def rank(
    rows: pl.DataFrame,
    model,
    tokenizer,
    names: dict[int, str],
    history: dict[int, set[int]] | None,
    p5: P5Params,
    positions=None,
) -> pl.DataFrame:
    """Item rows with `ranked` (top p5.top_k item ids, never one of the user's history), `validity` (share of the
    row's beams that named an item; 1 for rows ranked by likelihood, which only score real items)
    and `prediction` (the top item's name, "" if none remains). p5.direct_ranking: "likelihood"
    scores every candidate of rows that have a candidate list; "beam" runs beam search (p5.beams
    wide, p5.eval_batch_size prompts at once) on them too. p5.sequential_ranking: "beam" searches
    all items for rows without a list; "likelihood" scores every item outside the user's history
    (exact, and about 1,600 candidates a prompt on ML-100K). positions: intra positions
    (recpipe.recsysllm.positions.Positions), added by both ways of ranking."""
    k = p5.top_k
    missing = {i for c in rows["candidates"].drop_nulls().to_list() for i in c} - set(names)
    if missing:
        raise RecpipeError(f"{len(missing)} candidate items have no name, e.g. {sorted(missing)[:3]}")
    exclude = [history.get(u, set()) if history else set() for u in rows["user_id"].to_list()]
    hidden = sum(t in ex for t, ex in zip(rows["item_id"].to_list(), exclude))
    if hidden:
        log.warning(
            "p5eval: %d of %d item targets are in their user's history, which the ranking excludes", hidden, rows.height
        )
    listed = rows["candidates"].to_list()
    scored = [
        i
        for i, c in enumerate(listed)
        if (p5.direct_ranking if c is not None else p5.sequential_ranking) == "likelihood"
    ]
    searched = sorted(set(range(rows.height)) - set(scored))
    ranked: list[list[int]] = [[] for _ in range(rows.height)]
    validity = [1.0] * rows.height
    if scored:
        everything = sorted(names)
        candidates = [
            listed[i] if listed[i] is not None else [c for c in everything if c not in exclude[i]] for i in scored
        ]
        prompts = rows["prompt"].to_list()
        for i, order in zip(
            scored,
            likelihood_ranking(model, tokenizer, [prompts[i] for i in scored], candidates, names, positions=positions),
        ):
            ranked[i] = [c for c in order if c not in exclude[i]][:k]
    if searched:
        part = rows[searched]
        tries = [t.without(exclude[i]) for t, i in zip(_tries(part, names, tokenizer), searched, strict=True)]
        named = constrained_beams(
            model, tokenizer, part["prompt"].to_list(), tries, p5.beams, p5.eval_batch_size, positions=positions
        )
        for i, n in zip(searched, named):
            ranked[i] = top_items(n, k, exclude[i])
            validity[i] = sum(map(bool, n)) / len(n)
    return rows.with_columns(
        ranked=pl.Series(ranked, dtype=pl.List(pl.Int64)),
        validity=pl.Series(validity, dtype=pl.Float64),
        prediction=pl.Series([names[r[0]] if r else "" for r in ranked], dtype=pl.String),
    )


COLUMNS = ["family", "template", "seen", "kind", "user_id", "item_id", "target", "prediction", "ranked", "validity"]


def predict(
    test: pl.DataFrame,
    model,
    tokenizer,
    names: dict[int, str],
    history: dict[int, set[int]] | None,
    p5: P5Params,
    positions=None,
    rating_range: tuple[float, float] | None = None,
) -> pl.DataFrame:
    """Every row's answer (the rows of split p5.evaluate_split where the frame has a split column):
    COLUMNS, in the rows' order. `ranked` and `validity` are set for item rows only; `prediction`
    is the generated text (for item rows, the top item's name; with p5.rating_scoring "expected",
    a rating row's mean rating over the whole ratings of rating_range and a yes/no row's probability
    of yes)."""
    if "split" in test.columns:
        test = test.filter(pl.col("split") == p5.evaluate_split)
    if test.is_empty():
        raise RecpipeError(f"p5eval: no {p5.evaluate_split} rows to score")
    odd = set(test["kind"]) - set(KINDS.values())
    if odd:
        raise RecpipeError(f"p5eval: unknown kinds {sorted(odd)} (known: {sorted(set(KINDS.values()))})")
    if "candidates" not in test.columns:
        test = test.with_columns(candidates=pl.lit(None, pl.List(pl.Int64)))
    test = test.with_row_index("_row")
    items = test.filter(pl.col("kind") == "item")
    by_probability = pl.col("kind").is_in(["rating", "yes_no"]) & pl.lit(p5.rating_scoring == "expected")
    ratings = test.filter(by_probability & (pl.col("kind") == "rating"))
    yes_no = test.filter(by_probability & (pl.col("kind") == "yes_no"))
    texts = test.filter((pl.col("kind") != "item") & ~by_probability)
    parts = []

    def answered(rows: pl.DataFrame, answers: list[str]) -> pl.DataFrame:  # rows without a ranking
        return rows.with_columns(
            prediction=pl.Series(answers, dtype=pl.String),
            ranked=pl.lit(None, pl.List(pl.Int64)),
            validity=pl.lit(None, pl.Float64),
        )

    if ratings.height:
        if rating_range is None:
            raise RecpipeError("p5eval: rating_scoring expected needs the dataset's rating range")
        scale = {float(r): rating_text(r) for r in range(math.ceil(rating_range[0]), math.floor(rating_range[1]) + 1)}
        means = expected_ratings(model, tokenizer, ratings["prompt"].to_list(), scale, positions=positions)
        parts.append(answered(ratings, [f"{m:.4f}" for m in means]))
    if yes_no.height:
        p_yes = answer_probabilities(model, tokenizer, yes_no["prompt"].to_list(), [YES, NO], positions, "score yes/no")
        parts.append(answered(yes_no, [f"{float(p[0]):.4f}" for p in p_yes]))
    if items.height:
        parts.append(rank(items, model, tokenizer, names, history, p5, positions))
    if texts.height:
        parts.append(
            answered(
                texts,
                generate(
                    model,
                    tokenizer,
                    texts["prompt"].to_list(),
                    p5.max_new_tokens,
                    p5.eval_batch_size,
                    positions=positions,
                ),
            )
        )
    return pl.concat([p.select("_row", *COLUMNS) for p in parts]).sort("_row").drop("_row")


def group_metrics(rows: pl.DataFrame, rating_range: tuple[float, float], ks: tuple[int, ...]) -> dict:
    """One family's seen (or unseen) rows: n, and each kind's metrics with its n_<kind>."""
    out: dict = {"n": rows.height}
    for kind in ("rating", "yes_no", "item", "text"):
        part = rows.filter(pl.col("kind") == kind)
        if part.is_empty():
            continue
        preds, targets = part["prediction"].to_list(), part["target"].to_list()
        out[f"n_{kind}"] = part.height
        if kind == "rating":
            out |= rating_metrics(preds, [float(t) for t in targets], *rating_range)
        elif kind == "yes_no":
            out |= yes_no_metrics(preds, targets)
        elif kind == "item":
            ranked = part["ranked"].to_list()
            out |= ranking_metrics(ranked, part["item_id"].to_list(), part["validity"].to_list(), ks)
            out["short_lists"] = sum(len(r) < max(ks) for r in ranked)  # fewer than k items ranked
        else:
            out |= text_metrics(preds, targets)
    return out


def cutoffs(k: int) -> tuple[int, ...]:
    """The k of HR@k and NDCG@k: 1, 5 and 10 as far as the ranked lists reach, and k itself."""
    return tuple(sorted({x for x in (1, 5, 10) if x <= k} | {k}))


def family_metrics(
    predictions: pl.DataFrame, rating_range: tuple[float, float], ks: tuple[int, ...] = (1, 5, 10)
) -> dict:
    """{family: {"seen": metrics, "unseen": metrics}} from predict's frame (or its saved parquet)."""
    present = set(predictions["family"])
    unknown = present - set(FAMILIES)
    if unknown:
        raise RecpipeError(f"p5eval: unknown families {sorted(unknown)}")
    out = {}
    for family in (f for f in FAMILIES if f in present):
        rows = predictions.filter(pl.col("family") == family)
        out[family] = {
            name: group_metrics(rows.filter(pl.col("seen") == seen), rating_range, ks)
            for name, seen in (("seen", True), ("unseen", False))
        }
    return out


def evaluate_families(
    test: pl.DataFrame,
    model,
    tokenizer,
    names: dict[int, str],
    history: dict[int, set[int]] | None,
    p5: P5Params,
    rating_range: tuple[float, float],
    predictions_path: str | Path | None = None,
    positions=None,
) -> dict:
    """{family: {"seen": metrics, "unseen": metrics}} for the test rows of `test` (the module
    docstring names the metrics). `names`: item id -> name as prompts write it; `history`: user id
    -> items excluded from that user's rankings; p5: how to rank and generate (top_k, beams,
    direct_ranking, sequential_ranking, max_new_tokens, eval_batch_size). predictions_path: where to save predict's frame.
    (predict and family_metrics are the two halves, for the frame in memory.)"""
    started = time.perf_counter()
    predictions = predict(test, model, tokenizer, names, history, p5, positions, rating_range)
    metrics = family_metrics(predictions, rating_range, cutoffs(p5.top_k))
    for family, groups in metrics.items():
        log.info("p5eval: %s seen %s | unseen %s", family, groups["seen"], groups["unseen"])
    if predictions_path is not None:
        write_parquet(predictions, predictions_path)
    log.info("p5eval: %d prompts scored in %.1f s", predictions.height, time.perf_counter() - started)
    return metrics


def evaluate_p5(
    test_path,
    names_path,
    interactions_path,
    eval_dir,
    metrics_dir,
    model,
    tokenizer,
    p5: P5Params,
    rating_range: tuple[float, float],
    positions=None,
) -> dict:
    """The p5_evaluate stage: eval_dir/predictions.parquet (predict's frame) and one
    metrics_dir/<family>.json per family, {"seen": metrics, "unseen": metrics}, of the rows of
    split p5.evaluate_split (validation rows have seen templates only: their "unseen" has n 0).
    Rankings exclude the items the user rated before that split's leave-one-out item. positions:
    intra positions (recpipe.recsysllm.positions.Positions) or None."""
    names_frame = read_parquet(names_path, "families")
    names = dict(zip(names_frame["item_id"].to_list(), names_frame["name"].to_list()))
    history = {
        u: set(items)
        for u, items in loo_histories(read_parquet(interactions_path, "ingest"), p5.evaluate_split)[0].items()
    }
    with atomic_dir(eval_dir) as tmp:
        metrics = evaluate_families(
            read_parquet(test_path, "p5_sample"),
            model,
            tokenizer,
            names,
            history,
            p5,
            rating_range,
            tmp / "predictions.parquet",
            positions,
        )
    with atomic_dir(metrics_dir) as tmp:
        for family, groups in metrics.items():
            write_json(groups, tmp / f"{family}.json")
    return metrics
