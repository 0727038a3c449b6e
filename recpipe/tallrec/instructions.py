"""The `instructions` stage: TALLRec-style Yes/No instruction samples with a leak-free split.

The users' histories are read as one long table, sorted by user and then chronologically, and a
sample is a position in it: its history is the `history_len` rows right before it (the same
user's, since a sample needs that many earlier ones). Samples are chosen and split on a few
integer columns; the history lists and prompts are built with vectorised expressions in batches
that stream into the parquet file, so memory stays bounded however many samples there are."""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from recpipe import RecpipeError, log
from recpipe.data.splits import drop_leaks, split
from recpipe.io import read_parquet, scan_parquet, sink_parquet
from recpipe.params.instructions import InstructionsParams
from recpipe.templates import COLLAB_TOKEN, COLLAB_USER, load_template

REQUIRED = {
    "item": {"name"},
    "input": {"liked", "disliked", "target"},
    "prompt": {"instruction", "input"},
    "instruction": None,
    "answer_yes": None,
    "answer_no": None,
}
ALLOWED = {
    "item": {"name"},
    "input": {"liked", "disliked", "target", "n_liked", "n_disliked", "n_history"},
    "prompt": {"instruction", "input"},
}
# Samples rendered at a time: their prompts are the only per-sample text held in memory.
BATCH = 100_000
SCHEMA = {
    "sample_id": pl.String,
    "split": pl.String,
    "user_id": pl.Int64,
    "item_id": pl.Int64,
    "timestamp": pl.Int64,
    "rating": pl.Float64,
    "label": pl.Int8,
    "history_item_ids": pl.List(pl.Int64),
    "prompt": pl.String,
    "answer": pl.String,
}
# With collaborative tokens, after those (render_batch).
COLLAB_SCHEMA = {"collab_prompt": pl.String, "collab_item_ids": pl.List(pl.Int64)}
_LISTS = ["item_id", "rating", "timestamp", "row"]


def long_histories(hist: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The histories as one table, a row per interaction, by user and then chronologically, with
    `pos`, the interaction's place in its user's history, and `idx`, its row number."""
    return (
        hist.lazy()
        .select("user_id", *_LISTS, "file_order")
        .explode(_LISTS)
        .with_columns(pos=pl.int_range(pl.len()).over("user_id"))
        .with_row_index("idx")
    )


def sample_positions(long: pl.LazyFrame, history_len: int, like_threshold: float) -> pl.LazyFrame:
    """Every interaction with at least `history_len` earlier ones, as its row in `long` (no lists)."""
    return long.filter(
        pl.col("pos") >= history_len, pl.col("rating").is_not_null()
    ).with_columns(  # an implicit (unrated) event is history, never a target
        label=(pl.col("rating") > like_threshold).cast(pl.Int8)
    )


def _window(column: str, history_len: int) -> list[pl.Expr]:
    """The `history_len` values of a column right before each row, oldest first."""
    return [pl.col(column).shift(k) for k in range(history_len, 0, -1)]


def candidate_samples(hist: pl.DataFrame, history_len: int, like_threshold: float) -> pl.DataFrame:
    """Every interaction with at least `history_len` earlier ones becomes a sample (without text yet),
    with its history's items and whether each was liked (null: unrated)."""
    long = long_histories(hist).with_columns(
        history_item_ids=pl.concat_list(_window("item_id", history_len)),
        history_liked=pl.concat_list([r > like_threshold for r in _window("rating", history_len)]),
    )
    return sample_positions(long, history_len, like_threshold).drop("idx").collect()


def _prompt_pieces(tpl: dict, user: str = "") -> list[str | tuple[str]]:
    """The prompt as literal strings and (field,) placeholders of the input part (load_template
    has checked that both hold only plain fields of ALLOWED), with `user` first in the input."""
    pieces: list[str | tuple[str]] = []
    for literal, field, _, _ in string.Formatter().parse(tpl["prompt"]):
        pieces.append(literal)
        if field == "instruction":
            pieces.append(tpl["instruction"].strip())
        elif field == "input":
            pieces.append(user)
            for lit, f, _, _ in string.Formatter().parse(tpl["input"]):
                pieces.append(lit)
                if f is not None:
                    pieces.append((f,))
    return [p for p in pieces if p != ""]


def render_batch(
    samples: pl.DataFrame,
    long: pl.DataFrame,
    quoted: pl.Series,
    tpl: dict,
    history_len: int,
    like_threshold: float,
    collab_tokens: tuple[str, ...] = (),
) -> pl.DataFrame:
    """The output rows of some samples: their history lists and prompts, built column-wise.
    `long` holds item_id, code (the item's row in `quoted`) and rating per row of the long table;
    `quoted` is each item's name as the template quotes it. With collab_tokens (user, history,
    target), also the hybrid prompt with a collaborative token at each of those places
    (`collab_prompt`) and the item of each item token in the prompt's order (`collab_item_ids`)."""
    idx = samples["idx"].cast(pl.Int64)
    cols = {}
    for k in range(history_len, 0, -1):  # oldest first
        rows = idx - k
        cols[f"i{k}"] = long["item_id"].gather(rows)
        cols[f"n{k}"] = quoted.gather(long["code"].gather(rows))
        cols[f"l{k}"] = long["rating"].gather(rows) > like_threshold  # null: unrated, neither liked nor disliked
    ks = range(history_len, 0, -1)
    sep, empty = tpl["list_separator"], tpl["empty_list"]

    def as_list(names: pl.Expr) -> pl.Expr:
        return pl.when(names.list.len() == 0).then(pl.lit(empty)).otherwise(names.list.join(sep))

    def marked(name: pl.Expr, token: str) -> pl.Expr:  # the name with a collaborative token after it
        return pl.concat_str([name, pl.lit(f" {COLLAB_TOKEN}")]) if token in collab_tokens else name

    def chosen(liked: bool, column: str, token: str = "") -> pl.Expr:  # the liked or disliked ones, oldest first
        keep = [pl.col(f"l{k}") if liked else pl.col(f"l{k}").not_() for k in ks]
        return pl.concat_list([pl.when(w).then(marked(pl.col(f"{column}{k}"), token)) for w, k in zip(keep, ks)])

    def filled(frame: pl.DataFrame, pieces: list) -> pl.Series:  # the prompt of each row of frame
        return frame.select(
            pl.concat_str([pl.lit(p) if isinstance(p, str) else pl.col(p[0]) for p in pieces])
        ).to_series()

    liked, disliked = chosen(True, "n").list.drop_nulls(), chosen(False, "n").list.drop_nulls()
    named = pl.DataFrame(cols).with_columns(target=quoted.gather(samples["code"]), target_id=samples["item_id"])

    parts = named.select(
        history_item_ids=pl.concat_list([pl.col(f"i{k}") for k in ks]),
        liked=as_list(liked),
        disliked=as_list(disliked),
        target="target",
        n_liked=liked.list.len().cast(pl.String),
        n_disliked=disliked.list.len().cast(pl.String),
        n_history=pl.lit(str(history_len)),
    )
    prompt = filled(parts, _prompt_pieces(tpl))
    hybrid = {}
    if collab_tokens:
        fields = named.select(
            liked=as_list(chosen(True, "n", "history").list.drop_nulls()),
            disliked=as_list(chosen(False, "n", "history").list.drop_nulls()),
            target=marked(pl.col("target"), "target"),
        ).with_columns(parts.select("n_liked", "n_disliked", "n_history"))
        user = COLLAB_USER if "user" in collab_tokens else ""
        hybrid_pieces = _prompt_pieces(tpl, user)
        hybrid["collab_prompt"] = filled(fields, hybrid_pieces)
        # The item tokens' items, in the order the input's fields put them in the prompt.
        ids = {}
        if "history" in collab_tokens:
            ids["liked"], ids["disliked"] = chosen(True, "i").list.drop_nulls(), chosen(False, "i").list.drop_nulls()
        if "target" in collab_tokens:
            ids["target"] = pl.concat_list(pl.col("target_id"))
        order = [ids[p[0]] for p in hybrid_pieces if not isinstance(p, str) and p[0] in ids]
        item_ids = pl.concat_list(order) if order else pl.lit([], pl.List(long["item_id"].dtype))
        hybrid["collab_item_ids"] = named.select(item_ids.alias("collab_item_ids")).to_series()
    answers = pl.when(pl.col("label") == 1).then(pl.lit(tpl["answer_yes"])).otherwise(pl.lit(tpl["answer_no"]))
    return (
        samples.with_columns(history_item_ids=parts["history_item_ids"], prompt=prompt.alias("prompt"), answer=answers)
        .select(
            sample_id=pl.format("{}-{}", "user_id", "item_id"),
            split="split",
            user_id="user_id",
            item_id="item_id",
            timestamp="timestamp",
            rating="rating",
            label="label",
            history_item_ids="history_item_ids",
            prompt="prompt",
            answer="answer",
        )
        .with_columns(**hybrid)
    )


def _item_names(items: pl.DataFrame, tpl: dict) -> tuple[pl.DataFrame, pl.Series]:
    """Each item's row number (`code`) and its name quoted as the template's `item` says."""
    quoted = pl.Series("quoted", [tpl["item"].format(name=name) for name in items["name"].to_list()], dtype=pl.String)
    return items.select("item_id").with_row_index("code"), quoted


def plan(
    hist: pl.DataFrame | pl.LazyFrame, items: pl.DataFrame, params: InstructionsParams
) -> tuple[pl.DataFrame, pl.DataFrame, pl.Series, dict]:
    """Choose and split the samples: the split samples (a row of `long` each, ordered), the long
    table's columns the prompts need, the quoted item names, and the template."""
    tpl = load_template(params.template, REQUIRED, ALLOWED)
    codes, quoted = _item_names(items, tpl)
    long = long_histories(hist).join(codes.lazy(), on="item_id", how="left", maintain_order="left").collect()
    unnamed = long.filter(pl.col("code").is_null())
    if unnamed.height:
        raise RecpipeError(
            f"instructions: {unnamed['item_id'].n_unique()} items in the histories have no name, e.g. {unnamed['item_id'].unique().sort().head(3).to_list()}"
        )
    positions = sample_positions(long.lazy(), params.history_len, params.like_threshold).select(
        "idx", "code", "user_id", "item_id", "timestamp", "row", "rating", "label", "pos", "file_order"
    )
    samples = drop_leaks(split(positions.collect(), params.split, params.pool_size, params.fractions))
    return samples, long.select("item_id", "code", "rating"), quoted, tpl


def batches(
    samples: pl.DataFrame,
    long: pl.DataFrame,
    quoted: pl.Series,
    tpl: dict,
    params: InstructionsParams,
    size: int = BATCH,
    collab_tokens: tuple[str, ...] = (),
) -> Iterator[pl.DataFrame]:
    for start in range(0, samples.height, size):
        yield render_batch(
            samples.slice(start, size), long, quoted, tpl, params.history_len, params.like_threshold, collab_tokens
        )


def build(hist: pl.DataFrame, items: pl.DataFrame, params: InstructionsParams) -> pl.DataFrame:
    samples, long, quoted, tpl = plan(hist, items, params)
    return (
        pl.concat([*batches(samples, long, quoted, tpl, params)], how="vertical")
        if samples.height
        else pl.DataFrame(schema=SCHEMA)
    )


def same_answers(trained: str, scored: str) -> None:
    """A model trained on template `trained` answers with its words: samples built with template
    `scored` can be scored by it only if that template's answers are the same."""
    a, b = load_template(trained, REQUIRED), load_template(scored, REQUIRED)
    if (a["answer_yes"], a["answer_no"]) != (b["answer_yes"], b["answer_no"]):
        raise RecpipeError(
            f"evaluate.instructions.template {scored!r} answers {b['answer_yes']!r}/{b['answer_no']!r}, but the model is trained "
            f"on {trained!r}, which answers {a['answer_yes']!r}/{a['answer_no']!r}: use a template with the same answers"
        )


def write_instructions(
    text_dir: str | Path, out_path: str | Path, params: InstructionsParams, collab_tokens: tuple[str, ...] = ()
) -> int:
    """Build the samples from textualize's histories and item names and stream them to out_path;
    returns how many were written. With collab_tokens, each sample also gets its hybrid prompt
    (render_batch)."""
    text = Path(text_dir)
    samples, long, quoted, tpl = plan(
        scan_parquet(text / "histories.parquet", "textualize"),
        read_parquet(text / "items.parquet", "textualize"),
        params,
    )
    schema = {**SCHEMA, **COLLAB_SCHEMA} if collab_tokens else SCHEMA
    sink_parquet(lambda: batches(samples, long, quoted, tpl, params, collab_tokens=collab_tokens), schema, out_path)
    counts = samples.group_by("split").agg(n=pl.len(), positive=pl.col("label").mean()).sort("split")
    for split_name, n, pos in counts.iter_rows():
        log.info("instructions: %s: %d samples, %.1f%% positive", split_name, n, 100 * pos)
    return samples.height


def instructions(text_dir: str | Path, out_path: str | Path, params: InstructionsParams) -> pl.DataFrame:
    """write_instructions, then the written samples read back."""
    write_instructions(text_dir, out_path, params)
    return pl.read_parquet(out_path)
