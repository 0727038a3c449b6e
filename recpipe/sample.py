"""Stage 5: a K-shot training set and a small validation set, drawn with a seed."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recpipe import RecpipeError, log
from recpipe.io import atomic_dir, write_parquet
from recpipe.params import P5Params, SampleParams


def draw(pool: pl.DataFrame, n: int, seed: int, what: str, key: str | list[str] = "sample_id") -> pl.DataFrame:
    if n > pool.height:
        raise RecpipeError(f"{what} is {n}, larger than its pool of {pool.height} samples")
    # Sort first so the draw depends only on the pool's content, not its row order.
    return pool.sort(key).sample(n, seed=seed, shuffle=True)


def k_shot(train: pl.DataFrame, params: SampleParams, seed: int) -> pl.DataFrame:
    if not params.balanced:
        return draw(train, params.k, seed, "sample.k")
    pos, neg = params.k - params.k // 2, params.k // 2
    parts = [
        draw(train.filter(pl.col("label") == 1), pos, seed, f"sample.k={params.k} (balanced: {pos} positives)"),
        draw(train.filter(pl.col("label") == 0), neg, seed, f"sample.k={params.k} (balanced: {neg} negatives)"),
    ]
    return pl.concat(parts).sample(fraction=1.0, seed=seed, shuffle=True)


def sample(samples_path: str | Path, out_dir: str | Path, params: SampleParams, seed: int) -> None:
    samples = pl.read_parquet(samples_path)
    train = k_shot(samples.filter(pl.col("split") == "train"), params, seed)
    valid = draw(samples.filter(pl.col("split") == "valid"), params.valid_size, seed, "sample.valid_size")
    with atomic_dir(out_dir) as tmp:
        write_parquet(train, tmp / "train.parquet")
        write_parquet(valid, tmp / "valid.parquet")
    log.info("sample: %d training shots (%.0f%% positive), %d validation", train.height, 100 * train["label"].mean(), valid.height)


P5_KEY = ["family", "case_id", "template"]  # unique per P5 sample: a stable order to draw from


def shares(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` in proportion to `weights`: floors, then the largest remainders (ties by name)."""
    norm = sum(weights.values())
    exact = {name: total * w / norm for name, w in weights.items()}
    out = {name: int(x) for name, x in exact.items()}
    for name in sorted(exact, key=lambda n: (out[n] - exact[n], n))[: total - sum(out.values())]:
        out[name] += 1
    return out


def p5_mixture(samples: pl.DataFrame, params: P5Params, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Training mixture, validation set and test cases for the P5 families.

    train: p5.k samples split over the families by p5.weights (k None: every training sample of
    the weighted families). valid: p5.valid_size samples across those families. test: p5.test_cases
    cases per family, each with both its seen- and unseen-template rows."""
    present = sorted(set(samples["family"]))
    weights = {f: w for f, w in params.weights.items() if w > 0 and f in present}
    if not weights:
        raise RecpipeError(f"p5.weights: no family with weight > 0 among the dataset's families {present}")
    train_pool = samples.filter((pl.col("split") == "train") & pl.col("family").is_in(list(weights)))
    if params.k is None:
        train = train_pool.sort(P5_KEY).sample(fraction=1.0, seed=seed, shuffle=True)
    else:
        parts = [
            draw(train_pool.filter(pl.col("family") == family), n, seed, f"p5.k={params.k} ({family}: weight {weights[family]:g})", P5_KEY)
            for family, n in shares(params.k, weights).items() if n
        ]  # fmt: skip
        train = pl.concat(parts).sample(fraction=1.0, seed=seed, shuffle=True)
    valid_pool = samples.filter((pl.col("split") == "valid") & pl.col("family").is_in(list(weights)))
    valid = draw(valid_pool, min(params.valid_size, valid_pool.height), seed, "p5.valid_size", P5_KEY)
    test = samples.filter(pl.col("split") == "test")
    if params.test_cases is not None:
        cases = test.select("family", "case_id").unique().sort("family", "case_id")
        kept = pl.concat([c.sample(min(params.test_cases, c.height), seed=seed) for _, c in cases.group_by("family", maintain_order=True)])
        test = test.join(kept, on=["family", "case_id"], how="semi")
    return (
        train.with_columns(answer="target"),
        valid.with_columns(answer="target"),
        test.sort(P5_KEY),
    )


def p5_sample(families_dir: str | Path, out_dir: str | Path, params: P5Params, seed: int) -> None:
    train, valid, test = p5_mixture(pl.read_parquet(Path(families_dir) / "samples.parquet"), params, seed)
    with atomic_dir(out_dir) as tmp:
        write_parquet(train, tmp / "train.parquet")
        write_parquet(valid, tmp / "valid.parquet")
        write_parquet(test, tmp / "test.parquet")
    mix = ", ".join(f"{f} {n}" for f, n in train.group_by("family").len().sort("family").iter_rows())
    log.info("p5 sample: %d training samples (%s), %d validation, %d test prompts", train.height, mix, valid.height, test.height)
