"""The one chronological order and every split built on it: per-user histories, the temporal and
paper splits of TALLRec's samples, leave-one-out for P5 and the baselines, and seeded draws."""

from __future__ import annotations

import polars as pl

from recpipe import RecpipeError, log

# Every chronological order in recpipe uses this key: the timestamp, and among equal timestamps the
# order of the source file (`row`, recorded at ingest), as a stable sort on the timestamp keeps them
# in TALLRec's preprocessing and in RecBole. ML-100K has many same-second ratings (415 of 943 users'
# last two), and its item ids correlate with popularity: breaking ties by item id would bias every
# leave-one-out target towards less popular items.
CHRONO_KEY = ["timestamp", "row"]


def user_histories(interactions: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """One row per user: items, ratings, timestamps and source rows in chronological order
    (CHRONO_KEY), and `file_order`, the user's place by first appearance in the source file."""
    return histories_query(interactions.lazy()).collect()


def histories_query(interactions: pl.LazyFrame) -> pl.LazyFrame:
    """user_histories as a lazy query (a parquet scan stays a scan)."""
    # A user's first appearance is their smallest source row; ranking those rows orders the users.
    first_seen = (
        interactions.group_by("user_id")
        .agg(first=pl.col("row").min())
        .select("user_id", file_order=pl.col("first").rank("ordinal").cast(pl.Int64) - 1)
    )
    return (
        interactions.select("user_id", "item_id", "rating", "timestamp", "row")
        .group_by("user_id")
        .agg(pl.col("item_id", "rating", "timestamp", "row").sort_by(CHRONO_KEY))
        .sort("user_id")
        .join(first_seen, on="user_id", how="left", maintain_order="left")
    )


def _cut(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """Where train ends and test starts, as TALLRec cuts: int(n * 0.8) and int(n * 0.9)."""
    return int(n * fractions[0]), int(n * round(fractions[0] + fractions[1], 12))


def split(
    samples: pl.DataFrame,
    how: str,
    pool_size: int | None,
    fractions: tuple[float, float, float],
    check: bool = True,
) -> pl.DataFrame:
    """Order the samples, keep the last pool_size, and cut them train/valid/test in that order.

    temporal: global time order (CHRONO_KEY: timestamp, then source row); a cut never falls inside
      a run of equal timestamps, so every test sample is strictly later than every train sample.
    paper: TALLRec's preprocessing: users in order of first appearance in the ratings file, each
      user's samples in time order (ties in file order), the last pool_size cut 8:1:1 as they stand.
    A temporal split whose valid or test part comes out empty is an error (unless not `check`).
    """
    if how == "temporal" and samples["timestamp"].null_count():
        raise RecpipeError(
            "instructions.split 'temporal': this dataset has no timestamps (BookCrossing); use split: paper"
        )
    key = CHRONO_KEY if how == "temporal" else ["file_order", "pos"]
    ordered = samples.sort(key)
    if pool_size is not None:
        ordered = ordered.tail(pool_size)
    n = ordered.height
    a, b = _cut(n, fractions)
    if how == "temporal":
        ts = ordered["timestamp"]
        a = _run_end(ts, a)
        b = _run_end(ts, max(a, b))
        # A cut only moves forward past equal timestamps: it can run into the next cut or off the end.
        empty = "valid and test are" if a >= n else "valid is" if b <= a else "test is" if b >= n else None
        if check and n and empty:
            at = a - 1 if empty == "valid is" else n - 1  # the run the cut moved past
            tied = int((ts == ts[at]).sum())  # sorted by time: the equal ones stand together
            raise RecpipeError(
                f"instructions.split 'temporal': {empty} empty: {tied} of the {n} pooled samples share one "
                "timestamp, and a cut never falls inside a run of equal timestamps; raise instructions.pool_size "
                "or use split: paper"
            )
    at = pl.int_range(pl.len())
    return ordered.with_columns(
        split=pl.when(at < a).then(pl.lit("train")).when(at < b).then(pl.lit("valid")).otherwise(pl.lit("test"))
    )


def _run_end(ts: pl.Series, i: int) -> int:
    """Move a cut at position i forward past the run of equal timestamps it falls inside."""
    while 0 < i < len(ts) and ts[i] == ts[i - 1]:
        i += 1
    return i


def drop_leaks(samples: pl.DataFrame, stage: str = "instructions") -> pl.DataFrame:
    """No (user, item) that a later split asks about may be a target of an earlier split."""
    kept = samples
    for later, earlier in (("test", ["train", "valid"]), ("valid", ["train"])):
        asked = kept.filter(pl.col("split") == later).select("user_id", "item_id")
        leaking = kept.filter(pl.col("split").is_in(earlier)).join(asked, on=["user_id", "item_id"], how="semi")
        if leaking.height:
            log.warning(
                "%s: dropping %d %s samples whose target is asked in %s",
                stage,
                leaking.height,
                "/".join(earlier),
                later,
            )
            kept = kept.join(
                leaking.select("user_id", "item_id", "split"), on=["user_id", "item_id", "split"], how="anti"
            )
    return kept


def leave_one_out(interactions: pl.DataFrame) -> pl.DataFrame:
    """Each user's interactions in chronological order (CHRONO_KEY) with pos and split."""
    return (
        interactions.sort(["user_id", *CHRONO_KEY])
        .with_columns(pos=pl.int_range(pl.len()).over("user_id"), n=pl.len().over("user_id"))
        .with_columns(
            split=pl.when(pl.col("pos") == pl.col("n") - 1)
            .then(pl.lit("test"))
            .when(pl.col("pos") == pl.col("n") - 2)
            .then(pl.lit("valid"))
            .otherwise(pl.lit("train"))
        )
    )


def loo_histories(interactions: pl.DataFrame, held: str = "test") -> tuple[dict[int, list[int]], dict[int, int]]:
    """Per user with a leave-one-out `held` case ("test": the last rated item, 2+ rated items;
    "valid": the one before it): the history (every rated item before that case's item, in order)
    and that item. The LLM's rankings and the baselines both exclude this history."""
    if held not in ("test", "valid"):
        raise RecpipeError(f"leave-one-out: no held-out split {held!r} (test or valid)")
    missing = {"user_id", "item_id", "rating", *CHRONO_KEY} - set(interactions.columns)
    if missing:
        raise RecpipeError(f"the interactions table lacks the columns {sorted(missing)}")
    loo = leave_one_out(interactions.filter(pl.col("rating").is_not_null()))
    before = pl.col("split") != "test" if held == "test" else pl.col("split") == "train"
    history = dict(loo.filter(before).group_by("user_id", maintain_order=True).agg("item_id").iter_rows())
    target = dict(loo.filter(pl.col("split") == held, pl.col("n") >= 2).select("user_id", "item_id").iter_rows())
    return {u: history.get(u, []) for u in target}, target


def draw(pool: pl.DataFrame, n: int, seed: int, what: str, key: str | list[str] = "sample_id") -> pl.DataFrame:
    """n rows of `pool` drawn with the seed; `what` names the param asking for them in errors."""
    if n > pool.height:
        raise RecpipeError(f"{what} is {n}, larger than its pool of {pool.height} samples")
    # Sort first so the draw depends only on the pool's content, not its row order.
    return pool.sort(key).sample(n, seed=seed, shuffle=True)
