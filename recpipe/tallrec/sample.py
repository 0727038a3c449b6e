"""The `sample` stage: a K-shot training set and a small validation set, drawn with a seed."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recpipe import log
from recpipe.data.splits import draw
from recpipe.io import atomic_dir, read_parquet, write_parquet
from recpipe.params.sample import SampleParams


def k_shot(train: pl.DataFrame, params: SampleParams, seed: int) -> pl.DataFrame:
    if params.k is None:  # all of them, in an order of the seed's
        return train.sample(fraction=1.0, seed=seed, shuffle=True)
    if not params.balanced:
        return draw(train, params.k, seed, "sample.k")
    pos, neg = params.k - params.k // 2, params.k // 2
    parts = [
        draw(train.filter(pl.col("label") == 1), pos, seed, f"sample.k={params.k} (balanced: {pos} positives)"),
        draw(train.filter(pl.col("label") == 0), neg, seed, f"sample.k={params.k} (balanced: {neg} negatives)"),
    ]
    return pl.concat(parts).sample(fraction=1.0, seed=seed, shuffle=True)


def sample(samples_path: str | Path, out_dir: str | Path, params: SampleParams, seed: int) -> None:
    samples = read_parquet(samples_path, "instructions")
    train = k_shot(samples.filter(pl.col("split") == "train"), params, seed)
    valid = draw(samples.filter(pl.col("split") == "valid"), params.valid_size, seed, "sample.valid_size")
    with atomic_dir(out_dir) as tmp:
        write_parquet(train, tmp / "train.parquet")
        write_parquet(valid, tmp / "valid.parquet")
    log.info(
        "sample: %d training shots (%.0f%% positive), %d validation",
        train.height,
        100 * train["label"].mean(),
        valid.height,
    )
