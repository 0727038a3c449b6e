"""recpipe's data stages against a plain pandas version of TALLRec's preprocessing, at scale.

For each size, a seeded MovieLens-like log in the GroupLens format (benchmarks/_synth.py) is
prepared by both sides from the same files:
  recpipe: ingest -> textualize -> instructions (paper split, pool 10,000, history 10), each stage
    in its own process;
  pandas: users in order of first appearance, each user's ratings stably sorted by timestamp, a
    sample per position from 10 on with the 10 before it as history, the last 10,000 samples cut
    8:1:1, liked and disliked name lists and a JSON-like prompt per sample, one JSON file per split.
Each process's wall time and peak resident memory (from os.wait4) are printed, with the ratios, and
the two sides' samples (user, history, target, label, split, in order) are checked to be the same.

    python benchmarks/data_scale.py --sizes 1e6,1e7,2.5e7 [--work /tmp] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synth import raw_folder, write_grouplens  # noqa: E402

HISTORY, POOL, THRESHOLD = 10, 10_000, 3

RECPIPE_STAGES = {
    "ingest": """
from recpipe.data.ingest import ingest
from recpipe.params.registry import DatasetParams
ingest(W / "raw", W / "tables", DatasetParams.model_construct(rating_min=1, rating_max=5, k_core=None, implicit="drop"))
""",
    "textualize": """
from recpipe.data.textualize import textualize
textualize(W / "tables", W / "text", template="ml-100k", move_article=True)
""",
    "instructions": f"""
from recpipe.params.instructions import InstructionsParams
from recpipe.tallrec.instructions import write_instructions
write_instructions(W / "text", W / "samples.parquet", InstructionsParams(split="paper", pool_size={POOL}, history_len={HISTORY}, like_threshold={THRESHOLD}))
""",
}

PANDAS = f"""
import csv, json
import pandas as pd

ratings = pd.read_csv(W / "ml" / "u.data", sep="\\t", names=["user_id", "item_id", "rating", "timestamp"])
movies = pd.read_csv(W / "ml" / "u.item", sep="|", header=None, encoding="latin-1", quoting=csv.QUOTE_NONE, usecols=[0, 1], names=["item_id", "title"])
title = dict(zip(movies["item_id"], movies["title"]))

samples = []
for user, group in ratings.groupby("user_id", sort=False):  # users in order of first appearance
    group = group.sort_values("timestamp", kind="stable")  # same-second ratings keep file order
    items, stars = group["item_id"].tolist(), group["rating"].tolist()
    for i in range({HISTORY}, len(items)):
        samples.append((user, items[i - {HISTORY}:i], stars[i - {HISTORY}:i], items[i], stars[i]))
samples = samples[-{POOL}:]
n = len(samples)
cuts = {{"train": (0, int(n * 0.8)), "valid": (int(n * 0.8), int(n * 0.9)), "test": (int(n * 0.9), n)}}

rows = []
for split, (a, b) in cuts.items():
    records = []
    for user, hist, stars, target, rating in samples[a:b]:
        liked = ", ".join('"' + title[i] + '"' for i, r in zip(hist, stars) if r > {THRESHOLD})
        disliked = ", ".join('"' + title[i] + '"' for i, r in zip(hist, stars) if r <= {THRESHOLD})
        records.append({{
            "instruction": "Given the user's preference and unpreference, identify whether the user will like the target movie by answering \\"Yes.\\" or \\"No.\\".",
            "input": f"User Preference: {{liked}}\\nUser Unpreference: {{disliked}}\\nWhether the user will like the target movie \\"{{title[target]}}\\"?",
            "output": "Yes." if rating > {THRESHOLD} else "No.",
        }})
        rows.append((int(user), [int(i) for i in hist], int(target), int(rating > {THRESHOLD}), split))
    with open(W / f"pandas_{{split}}.json", "w") as f:
        json.dump(records, f, indent=4)
pd.DataFrame(rows, columns=["user_id", "history_item_ids", "item_id", "label", "split"]).to_parquet(W / "pandas_samples.parquet")
"""


def run(code: str, work: Path) -> tuple[float, float]:
    """Run code in a fresh Python process (W is the work folder); its wall seconds and peak RSS in GB."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
    }
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from pathlib import Path\nW = Path({str(work)!r})\n{code}"], env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"error: a stage failed (exit {proc.returncode}):\n{code}")
    return seconds, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def same_samples(work: Path) -> bool:
    import polars as pl

    cols = ["user_id", "history_item_ids", "item_id", "label", "split"]
    ours = pl.read_parquet(work / "samples.parquet", columns=cols).with_columns(pl.col("label").cast(pl.Int64))
    theirs = pl.read_parquet(work / "pandas_samples.parquet", columns=cols)
    return ours.equals(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1e6", help="comma-separated numbers of ratings, e.g. 1e6,1e7,2.5e7")
    parser.add_argument("--work", default=None, help="where the files go (a temporary folder inside it)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    header = f"{'ratings':>12} {'side':<22}{'seconds':>9}{'peak GB':>9}"
    print(header)
    for size in [int(float(s)) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(dir=args.work) as work:
            work = Path(work)
            raw_folder(write_grouplens(work / "ml", size, args.seed), work / "raw")
            ours = {}
            for stage, code in RECPIPE_STAGES.items():
                ours[stage] = run(code, work)
                print(f"{size:>12,} {'recpipe ' + stage:<22}{ours[stage][0]:>9.1f}{ours[stage][1]:>9.2f}", flush=True)
            total, peak = sum(t for t, _ in ours.values()), max(m for _, m in ours.values())
            print(f"{size:>12,} {'recpipe (3 stages)':<22}{total:>9.1f}{peak:>9.2f}", flush=True)
            t_pd, m_pd = run(PANDAS, work)
            print(f"{size:>12,} {'pandas script':<22}{t_pd:>9.1f}{m_pd:>9.2f}", flush=True)
            same = same_samples(work)
        print(
            f"{size:>12,} speed-up: {t_pd / total:.1f}x over pandas, peak memory {peak / m_pd:.2f}x pandas'; identical samples: {same}",
            flush=True,
        )


if __name__ == "__main__":
    main()
