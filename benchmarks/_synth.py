"""Seeded synthetic MovieLens-like rating logs of any size, in the GroupLens format (ML-100K's
u.data, u.item and u.user), for the data-scale benchmark.

The shape follows MovieLens: item popularity is a power law (a few blockbusters, a long tail),
user activity is skewed (at least 20 ratings each, a log-normal tail of heavy raters), ratings
mix an item effect and a user effect, a user rates in sessions (many ratings in the same second),
and the file lists the ratings roughly, not exactly, in time order.

    python benchmarks/_synth.py OUT_DIR --n 1000000 [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import polars as pl

from recpipe.data.formats import ML100K_GENRES

WORDS = [
    "Night",
    "River",
    "Star",
    "Love",
    "War",
    "City",
    "Ghost",
    "Summer",
    "King",
    "Road",
    "Dream",
    "Fire",
    "Shadow",
    "Heart",
    "Island",
    "Secret",
    "Storm",
    "Angel",
    "Time",
    "Moon",
]
OCCUPATIONS = ["student", "engineer", "artist", "doctor", "writer", "educator", "programmer", "other"]


def sizes(n: int) -> tuple[int, int]:
    """Users and items for n ratings, about MovieLens' proportions (ML-20M: 138K users, 27K items)."""
    return max(10, n // 150), max(50, int(5 * n**0.5))


def ratings(n: int, seed: int = 0) -> pl.DataFrame:
    """n distinct (user, item) ratings with timestamps, in file order."""
    rng = np.random.default_rng(seed)
    n_users, n_items = sizes(n)
    # Activity: 20 each, plus a log-normal share of the rest; no user rates more than half the items.
    extra = rng.lognormal(0.0, 1.2, n_users)
    counts = 20 + np.floor(extra / extra.sum() * max(0, n * 1.1 - 20 * n_users)).astype(np.int64)
    counts = np.minimum(counts, n_items // 2)
    users = np.repeat(np.arange(1, n_users + 1, dtype=np.int64), counts)
    # Popularity: Zipf-like over a random permutation of the item ids.
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    order = rng.permutation(n_items) + 1
    cdf = np.cumsum(weights / weights.sum())
    items = order[np.searchsorted(cdf, rng.random(users.size), side="right").clip(0, n_items - 1)]
    cdf = np.cumsum(weights / weights.sum())

    def draw_items(k: int) -> np.ndarray:
        return order[np.searchsorted(cdf, rng.random(k), side="right").clip(0, n_items - 1)]

    pairs = pl.DataFrame({"user_id": users, "item_id": items}).unique(maintain_order=True)
    for _ in range(20):  # repeated (user, item) draws collapse: draw more until there are n
        short = n - pairs.height
        if short <= 0:
            break
        more_users = rng.choice(
            np.arange(1, n_users + 1, dtype=np.int64), int(short * 1.3) + 10, p=counts / counts.sum()
        )
        more = pl.DataFrame({"user_id": more_users, "item_id": draw_items(more_users.size)})
        pairs = pl.concat([pairs, more]).unique(maintain_order=True)
    pairs = pairs.sample(min(n, pairs.height), seed=seed).sort("user_id", maintain_order=True)
    m = pairs.height
    # Sessions: a start per user, then steps of 0 s (same second), seconds, minutes or days.
    steps = rng.choice(np.array([0, 0, 1, 7, 60, 600, 3_600, 86_400 * 3]), m)
    start = rng.integers(880_000_000, 1_400_000_000, n_users + 1)
    item_bias = rng.normal(0, 0.6, n_items + 1)
    user_bias = rng.normal(0, 0.5, n_users + 1)
    uid = pairs["user_id"].to_numpy()
    rating = np.clip(
        np.rint(3.5 + item_bias[pairs["item_id"].to_numpy()] + user_bias[uid] + rng.normal(0, 0.9, m)), 1, 5
    ).astype(np.int64)
    table = pairs.with_columns(rating=pl.Series(rating), step=pl.Series(steps), start=pl.Series(start[uid]))
    table = table.with_columns(timestamp=pl.col("start") + pl.col("step").cum_sum().over("user_id"))
    # File order: by time give or take a day, so same-second and near ratings of a user interleave.
    noise = rng.normal(0, 86_400, m)
    return (
        table.with_columns(key=pl.col("timestamp") + pl.Series(noise))
        .sort("key")
        .select("user_id", "item_id", "rating", "timestamp")
    )


def write_grouplens(out: str | Path, n: int, seed: int = 0) -> Path:
    """Write u.data, u.item and u.user for about n ratings (exactly n unless the pairs run out)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    data = ratings(n, seed)
    data.write_csv(out / "u.data", separator="\t", include_header=False)
    n_users, n_items = sizes(n)
    words = np.array(WORDS)
    first, second = rng.integers(0, len(WORDS), n_items), rng.integers(0, len(WORDS), n_items)
    years = rng.integers(1930, 2015, n_items)
    genre = rng.integers(0, len(ML100K_GENRES), n_items)
    lines = []
    for i in range(n_items):
        title = f"{words[first[i]]} {words[second[i]]} {i + 1}" + (", The" if i % 7 == 0 else "")
        flags = ["0"] * len(ML100K_GENRES)
        flags[genre[i]] = "1"
        lines.append(
            f"{i + 1}|{title} ({years[i]})|01-Jan-{years[i]}||http://example.org/{i + 1}|" + "|".join(flags) + "\n"
        )
    (out / "u.item").write_text("".join(lines), encoding="latin-1")
    ages, genders, jobs = (
        rng.integers(7, 74, n_users),
        rng.integers(0, 2, n_users),
        rng.integers(0, len(OCCUPATIONS), n_users),
    )
    (out / "u.user").write_text(
        "".join(f"{u + 1}|{ages[u]}|{'MF'[genders[u]]}|{OCCUPATIONS[jobs[u]]}|{10000 + u}\n" for u in range(n_users))
    )
    return out


def raw_folder(grouplens: str | Path, raw: str | Path) -> Path:
    """The download stage's output for these files: one file per role (hard links) and source.json."""
    grouplens, raw = Path(grouplens), Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    for role, name in (("interactions", "u.data"), ("items", "u.item"), ("users", "u.user")):
        (raw / role).unlink(missing_ok=True)
        os.link(grouplens / name, raw / role)
    record = {"dataset": "synth", "source": "synth", "format": "grouplens", "encoding": "latin-1"}
    (raw / "source.json").write_text(json.dumps(record))
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--n", type=float, default=1e6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = write_grouplens(args.out, int(args.n), args.seed)
    print(f"{out}: {sum(1 for _ in open(out / 'u.data')):,} ratings")


if __name__ == "__main__":
    main()
