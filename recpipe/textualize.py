"""Stage 3: turn tables into text (items, users, chronological histories) with entity spans."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from recpipe import log
from recpipe.io import atomic_dir, write_parquet
from recpipe.templates import load_template, render

SPAN = pl.List(pl.Struct({"entity": pl.String, "start": pl.Int64, "end": pl.Int64}))
# "Usual Suspects, The" or "Blue Angel, The (Blaue Engel, Der)": the article moves to the front.
_TRAILING_ARTICLE = re.compile(r"^(?P<base>.+?), (?P<article>The|A|An)(?P<rest>(?: \(.*\))?)$")

# Every chronological order in recpipe uses this key. ML-100K has many same-second ratings, so the
# item id breaks ties: it does not depend on which source's file order arrived.
CHRONO_KEY = ["timestamp", "item_id"]


def article_first(title: str) -> str:
    m = _TRAILING_ARTICLE.match(title)
    return f"{m['article']} {m['base']}{m['rest']}" if m else title


def items_text(items: pl.DataFrame, tpl: dict, move_article: bool) -> pl.DataFrame:
    rows = []
    for item in items.iter_rows(named=True):
        title = article_first(item["title"]) if move_article else item["title"]
        name_tpl = tpl["item_name"] if item["year"] is not None else tpl["item_name_no_year"]
        name, name_spans = render(name_tpl, {"title": title, "year": str(item["year"])})
        text, spans = render(tpl["item_text"], {"name": name, "genres": item["genres"] or ["unknown"]})
        # The name's own entities (title, year) sit inside the name span; record them too.
        offset = next(s["start"] for s in spans if s["entity"] == "name")
        spans += [{**s, "start": s["start"] + offset, "end": s["end"] + offset} for s in name_spans]
        rows.append({"item_id": item["item_id"], "name": name, "text": text, "spans": sorted(spans, key=lambda s: (s["start"], -s["end"]))})
    return pl.DataFrame(rows, schema={"item_id": pl.Int64, "name": pl.String, "text": pl.String, "spans": SPAN})


def users_text(users: pl.DataFrame, tpl: dict) -> pl.DataFrame:
    rows = []
    for user in users.iter_rows(named=True):
        fields = {
            "age": str(user["age"]) if user["age"] is not None else "unknown",
            "gender": tpl["genders"].get(user["gender"], user["gender"] or "person"),
            "occupation": user["occupation"] or "unknown",
        }
        text, spans = render(tpl["user_text"], fields)
        rows.append({"user_id": user["user_id"], "text": text, "spans": spans})
    return pl.DataFrame(rows, schema={"user_id": pl.Int64, "text": pl.String, "spans": SPAN})


def histories(interactions: pl.DataFrame) -> pl.DataFrame:
    """One row per user: items, ratings and timestamps in chronological order (CHRONO_KEY)."""
    first_seen = interactions.select("user_id").unique(maintain_order=True).with_row_index("file_order")
    return (
        interactions.sort(["user_id", *CHRONO_KEY])
        .group_by("user_id", maintain_order=True)
        .agg("item_id", "rating", "timestamp")
        .join(first_seen, on="user_id")
        .with_columns(pl.col("file_order").cast(pl.Int64))
        .sort("user_id")
    )


def textualize(tables_dir: str | Path, out_dir: str | Path, template: str = "ml-100k", move_article: bool = True) -> None:
    tables = Path(tables_dir)
    tpl = load_template(template, {"item_name": {"title", "year"}, "item_text": {"name"}, "user_text": set()})
    items = items_text(pl.read_parquet(tables / "items.parquet"), tpl, move_article)
    users = users_text(pl.read_parquet(tables / "users.parquet"), tpl)
    hist = histories(pl.read_parquet(tables / "interactions.parquet"))
    with atomic_dir(out_dir) as tmp:
        write_parquet(items, tmp / "items.parquet")
        write_parquet(users, tmp / "users.parquet")
        write_parquet(hist, tmp / "histories.parquet")
    log.info("textualize: %d items, %d users, %d histories", items.height, users.height, hist.height)
