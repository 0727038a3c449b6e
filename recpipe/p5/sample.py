"""The P5 families' training mixture (p5.k samples over the families by p5.weights), validation
set and test cases, drawn with a seed; the leak guard runs here, on what is drawn."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recpipe import RecpipeError, log
from recpipe.data.splits import draw
from recpipe.io import atomic_dir, read_parquet, write_parquet
from recpipe.params.p5 import P5Params
from recpipe.templates import ANSWER_SPACE

P5_KEY = ["family", "case_id", "template"]  # unique per P5 sample: a stable order to draw from


def shares(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` in proportion to `weights`: floors, then the largest remainders (ties by name)."""
    norm = sum(weights.values())
    exact = {name: total * w / norm for name, w in weights.items()}
    out = {name: int(x) for name, x in exact.items()}
    for name in sorted(exact, key=lambda n: (out[n] - exact[n], n))[: total - sum(out.values())]:
        out[name] += 1
    return out


def hold_out(pool: pl.DataFrame, asked: pl.DataFrame, what: str, by: str) -> pl.DataFrame:
    """`pool` without the samples whose target (user, item) `asked` asks about, and with those pairs
    taken out of every remaining sample's history spans (the loss then skips them there too)."""
    pairs = asked.select("user_id", "item_id").unique()
    kept = pool.join(pairs, on=["user_id", "item_id"], how="anti")
    if kept.height < pool.height:
        log.info(
            "p5 sample: %d %s samples left out: a drawn %s asks about their target", pool.height - kept.height, what, by
        )
    held = set(pairs.iter_rows())
    spans = [
        [s for s in row_spans if (user, s[2]) not in held]
        for user, row_spans in kept.select("user_id", "spans").iter_rows()
    ]
    return kept.with_columns(spans=pl.Series(spans, dtype=pl.List(pl.List(pl.Int64))))


def p5_mixture(samples: pl.DataFrame, params: P5Params, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Training mixture, validation set and test cases for the P5 families.

    train: p5.k samples split over the families by p5.weights (k None: every training sample of
    the weighted families). valid: p5.valid_size samples across those families. test: p5.test_cases
    cases per family, each with both its seen- and unseen-template rows.

    The leak guard is applied here, to what is asked: no (user, item) a drawn test case asks about
    is a validation or training target, and none a drawn validation sample asks about is a training
    target (nor a history item the loss covers, see hold_out). Holding out every pair the families
    could test would cost more: the rating family splits by time, so its test and validation pools
    are the last 20% of all ratings, and the sequential and direct families would lose every
    user's most recent items (on ML-100K 19,405 of 98,114 training positions) for the sake of
    100 rating test cases."""
    present = sorted(set(samples["family"]))
    weights = {f: w for f, w in params.weights.items() if w > 0 and f in present}
    if not weights:
        raise RecpipeError(f"p5.weights: no family with weight > 0 among the dataset's families {present}")
    test = samples.filter(pl.col("split") == "test")
    if params.test_cases is not None:
        cases = test.select("family", "case_id").unique().sort("family", "case_id")
        kept = pl.concat(
            [
                c.sample(min(params.test_cases, c.height), seed=seed)
                for _, c in cases.group_by("family", maintain_order=True)
            ]
        )
        test = test.join(kept, on=["family", "case_id"], how="semi")
    valid_pool = hold_out(
        samples.filter((pl.col("split") == "valid") & pl.col("family").is_in(list(weights))),
        test,
        "validation",
        "test case",
    )
    valid = draw(valid_pool, min(params.valid_size, valid_pool.height), seed, "p5.valid_size", P5_KEY)
    train_pool = hold_out(
        samples.filter((pl.col("split") == "train") & pl.col("family").is_in(list(weights))),
        pl.concat([test, valid]),
        "training",
        "test case or validation sample",
    )
    if params.k is None:
        train = train_pool.sort(P5_KEY).sample(fraction=1.0, seed=seed, shuffle=True)
    else:
        parts = [
            draw(
                train_pool.filter(pl.col("family") == family),
                n,
                seed,
                f"p5.k={params.k} ({family}: weight {weights[family]:g})",
                P5_KEY,
            )
            for family, n in shares(params.k, weights).items()
            if n
        ]
        train = pl.concat(parts).sample(fraction=1.0, seed=seed, shuffle=True)
    # What training writes after a prompt: the target after one space (recpipe.templates.in_text).
    answer = (pl.lit(ANSWER_SPACE) + pl.col("target")).alias("answer")
    return (
        train.with_columns(answer),
        valid.with_columns(answer),
        test.sort(P5_KEY),
    )


def p5_sample(families_dir: str | Path, out_dir: str | Path, params: P5Params, seed: int) -> None:
    train, valid, test = p5_mixture(read_parquet(Path(families_dir) / "samples.parquet", "families"), params, seed)
    with atomic_dir(out_dir) as tmp:
        write_parquet(train, tmp / "train.parquet")
        write_parquet(valid, tmp / "valid.parquet")
        write_parquet(test, tmp / "test.parquet")
    mix = ", ".join(f"{f} {n}" for f, n in train.group_by("family").len().sort("family").iter_rows())
    log.info(
        "p5 sample: %d training samples (%s), %d validation, %d test prompts",
        train.height,
        mix,
        valid.height,
        test.height,
    )
