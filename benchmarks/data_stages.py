"""recpipe's Polars data stages against a plain pandas implementation of the same preprocessing.

Both sides start from the same canonical tables (by default data/tables/ml-100k, which `dvc repro
ingest@ml-100k` makes; --tables takes any folder of items/interactions parquet tables) and end with the TALLRec samples written to parquet: item names, per-user chronological histories
(tie-break: timestamp, then item id), one sample per interaction with at least `history_len`
earlier ones, liked/disliked lists, the temporal split with its leak guard, and the prompts.
The pandas side is written the way such preprocessing usually is (groupby, per-user Python loop,
DataFrame.apply). The script checks that both produce the same samples and prompts, then prints
the best-of-N wall time of each and the ratio.

    python benchmarks/data_stages.py [--repeats 3] [--tables data/tables/ml-100k]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import polars as pl

from recpipe.data.textualize import article_first, textualize
from recpipe.params import schema as params
from recpipe.tallrec.instructions import REQUIRED, instructions
from recpipe.templates import load_template, placeholders, render

TABLES = "data/tables/ml-100k"


def pandas_samples(tables: Path, p: params.Params, out: Path) -> pd.DataFrame:
    ip = p.instructions
    text_tpl = load_template(p.dataset, {})
    tpl = load_template(ip.template, REQUIRED)
    items = pd.read_parquet(tables / "items.parquet")
    inter = pd.read_parquet(tables / "interactions.parquet")

    # item_name is one template or a list of them: the first whose placeholders all have a value.
    alternatives = text_tpl["item_name"] if isinstance(text_tpl["item_name"], list) else [text_tpl["item_name"]]

    def name(row) -> str:
        values = {"title": article_first(row["title"]) if p.textualize.article_first else row["title"]}
        if not pd.isna(row["year"]):
            values["year"] = int(row["year"])
        chosen = next((t for t in alternatives if placeholders(t) <= values.keys()), alternatives[-1])
        return chosen.format(**values)

    names = dict(zip(items["item_id"], items.apply(name, axis=1)))
    file_order = {u: i for i, u in enumerate(inter["user_id"].drop_duplicates())}
    rows = []
    # A stable sort on the timestamp keeps same-second ratings in file order (the table's row order).
    for user, hist in inter.sort_values(["user_id", "timestamp"], kind="stable").groupby("user_id", sort=True):
        ids, ratings, stamps, file_rows = (
            hist["item_id"].tolist(),
            hist["rating"].tolist(),
            hist["timestamp"].tolist(),
            hist["row"].tolist(),
        )
        for pos in range(ip.history_len, len(ids)):
            window = slice(pos - ip.history_len, pos)
            rows.append(
                {
                    "user_id": user,
                    "item_id": ids[pos],
                    "timestamp": stamps[pos],
                    "row": file_rows[pos],
                    "rating": ratings[pos],
                    "label": int(ratings[pos] > ip.like_threshold),
                    "pos": pos,
                    "file_order": file_order[user],
                    "history_item_ids": ids[window],
                    "history_liked": [r > ip.like_threshold for r in ratings[window]],
                }
            )
    samples = pd.DataFrame(rows)

    key = ["timestamp", "row"] if ip.split == "temporal" else ["file_order", "pos"]
    samples = samples.sort_values(key, kind="stable")
    if ip.pool_size is not None:
        samples = samples.tail(ip.pool_size)
    samples = samples.reset_index(drop=True)
    n = len(samples)
    a, b = int(n * ip.fractions[0]), int(n * round(ip.fractions[0] + ip.fractions[1], 12))
    if ip.split == "temporal":
        ts = samples["timestamp"].tolist()
        while 0 < a < n and ts[a] == ts[a - 1]:
            a += 1
        b = max(a, b)
        while 0 < b < n and ts[b] == ts[b - 1]:
            b += 1
    samples["split"] = ["train"] * a + ["valid"] * (b - a) + ["test"] * (n - b)
    for later, earlier in (("test", ["train", "valid"]), ("valid", ["train"])):
        asked = set(map(tuple, samples.loc[samples["split"] == later, ["user_id", "item_id"]].values.tolist()))
        pair = list(zip(samples["user_id"], samples["item_id"]))
        leaking = samples["split"].isin(earlier) & pd.Series([x in asked for x in pair], index=samples.index)
        samples = samples[~leaking]

    def prompt(row) -> str:
        def as_list(ids):
            return (
                tpl["list_separator"].join(tpl["item"].format(name=names[i]) for i in ids) if ids else tpl["empty_list"]
            )

        liked = [i for i, ok in zip(row["history_item_ids"], row["history_liked"]) if ok]
        disliked = [i for i, ok in zip(row["history_item_ids"], row["history_liked"]) if ok is False]
        body = tpl["input"].format(
            liked=as_list(liked),
            disliked=as_list(disliked),
            target=tpl["item"].format(name=names[row["item_id"]]),
            n_liked=len(liked),
            n_disliked=len(disliked),
            n_history=len(row["history_item_ids"]),
        )
        return render(tpl["prompt"], {"instruction": tpl["instruction"].strip(), "input": body})[0]

    samples["prompt"] = samples.apply(prompt, axis=1)
    samples["answer"] = samples["label"].map({1: tpl["answer_yes"], 0: tpl["answer_no"]})
    samples.to_parquet(out)
    return samples


def polars_samples(tables: Path, p: params.Params, work: Path) -> pl.DataFrame:
    textualize(tables, work / "text", template=p.dataset, move_article=p.textualize.article_first)
    return instructions(work / "text", work / "samples.parquet", p.instructions)


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tables", default=TABLES, help="folder with items.parquet and interactions.parquet")
    args = parser.parse_args()
    tables = Path(args.tables)
    if not (tables / "interactions.parquet").exists():
        sys.exit(f"error: {tables} has no tables: run `dvc repro ingest@ml-100k` first")
    p = params.load()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        t_polars, ours = best_of(args.repeats, lambda: polars_samples(tables, p, work))
        t_pandas, naive = best_of(args.repeats, lambda: pandas_samples(tables, p, work / "pandas.parquet"))
    cols = ["user_id", "item_id", "label", "split", "prompt"]
    a = ours.select(cols).sort("user_id", "item_id")
    b = (
        pl.from_pandas(naive[cols].reset_index(drop=True))
        .with_columns(pl.col("label").cast(a["label"].dtype))
        .sort("user_id", "item_id")
    )
    same = a.equals(b)
    n = ours.height
    print(f"{'implementation':<34}{'seconds':>9}{'samples/s':>12}")
    print(f"{'recpipe (Polars)':<34}{t_polars:>9.2f}{n / t_polars:>12,.0f}")
    print(f"{'plain pandas':<34}{t_pandas:>9.2f}{n / t_pandas:>12,.0f}")
    print(
        f"speed-up: {t_pandas / t_polars:.1f}x   ({n:,} samples, best of {args.repeats}; identical samples and prompts: {same})"
    )


if __name__ == "__main__":
    main()
