"""Stage 4: TALLRec-style Yes/No instruction samples with a leak-free split."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recpipe import log
from recpipe.data.splits import drop_leaks, split
from recpipe.io import write_parquet
from recpipe.params import InstructionsParams
from recpipe.templates import load_template, render

REQUIRED = {"item": {"name"}, "input": {"liked", "disliked", "target"}, "prompt": {"instruction", "input"}, "instruction": set(), "answer_yes": set(), "answer_no": set()}


def candidate_samples(hist: pl.DataFrame, history_len: int, like_threshold: float) -> pl.DataFrame:
    """Every interaction with at least `history_len` earlier ones becomes a sample (without text yet)."""
    long = hist.explode(["item_id", "rating", "timestamp", "row"]).with_columns(pos=pl.int_range(pl.len()).over("user_id"))
    seqs = hist.select("user_id", hist_items="item_id", hist_ratings="rating")
    return (
        long.filter(pl.col("pos") >= history_len)
        .join(seqs, on="user_id")
        .with_columns(
            history_item_ids=pl.col("hist_items").list.slice(pl.col("pos") - history_len, history_len),
            history_liked=pl.col("hist_ratings").list.slice(pl.col("pos") - history_len, history_len).list.eval(pl.element() > like_threshold),
            label=(pl.col("rating") > like_threshold).cast(pl.Int8),
        )
        .drop("hist_items", "hist_ratings")
        .filter(pl.col("rating").is_not_null())  # an implicit (unrated) event is history, never a target
    )


def render_prompts(samples: pl.DataFrame, names: dict[int, str], tpl: dict) -> pl.DataFrame:
    def as_list(ids: list[int]) -> str:
        if not ids:
            return tpl["empty_list"]
        return tpl["list_separator"].join(tpl["item"].format(name=names[i]) for i in ids)

    prompts = []
    for row in samples.select("history_item_ids", "history_liked", "item_id").iter_rows():
        ids, liked, target = row
        liked_ids = [i for i, ok in zip(ids, liked) if ok]
        disliked_ids = [i for i, ok in zip(ids, liked) if ok is False]  # None: unrated, neither
        # A template may also state the list sizes ({n_liked}, {n_disliked}, {n_history}).
        body = tpl["input"].format(
            liked=as_list(liked_ids),
            disliked=as_list(disliked_ids),
            target=tpl["item"].format(name=names[target]),
            n_liked=len(liked_ids),
            n_disliked=len(disliked_ids),
            n_history=len(ids),
        )
        prompts.append(render(tpl["prompt"], {"instruction": tpl["instruction"].strip(), "input": body})[0])
    answers = pl.when(pl.col("label") == 1).then(pl.lit(tpl["answer_yes"])).otherwise(pl.lit(tpl["answer_no"]))
    return samples.with_columns(prompt=pl.Series(prompts, dtype=pl.String), answer=answers)


def build(hist: pl.DataFrame, items: pl.DataFrame, params: InstructionsParams) -> pl.DataFrame:
    tpl = load_template(params.template, REQUIRED)
    samples = drop_leaks(split(candidate_samples(hist, params.history_len, params.like_threshold), params.split, params.pool_size, params.fractions))
    names = dict(zip(items["item_id"].to_list(), items["name"].to_list()))
    samples = render_prompts(samples, names, tpl)
    return samples.select(
        sample_id=pl.format("{}-{}", "user_id", "item_id"),
        split="split", user_id="user_id", item_id="item_id", timestamp="timestamp",
        rating="rating", label="label", history_item_ids="history_item_ids", prompt="prompt", answer="answer",
    )  # fmt: skip


def instructions(text_dir: str | Path, out_path: str | Path, params: InstructionsParams) -> pl.DataFrame:
    text = Path(text_dir)
    samples = build(pl.read_parquet(text / "histories.parquet"), pl.read_parquet(text / "items.parquet"), params)
    write_parquet(samples, out_path)
    counts = samples.group_by("split").agg(n=pl.len(), positive=pl.col("label").mean()).sort("split")
    for split_name, n, pos in counts.iter_rows():
        log.info("instructions: %s: %d samples, %.1f%% positive", split_name, n, 100 * pos)
    return samples
