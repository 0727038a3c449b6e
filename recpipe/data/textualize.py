"""The `textualize` stage: turn tables into text (items, users, chronological histories) with entity spans."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from recpipe import log
from recpipe.data.splits import histories_query
from recpipe.io import atomic_dir, read_parquet, scan_parquet, write_parquet
from recpipe.templates import load_template, placeholders, render

SPAN = pl.List(pl.Struct({"entity": pl.String, "start": pl.Int64, "end": pl.Int64}))
# "Usual Suspects, The" or "Blue Angel, The (Blaue Engel, Der)": the article moves to the front.
_TRAILING_ARTICLE = re.compile(r"^(?P<base>.+?), (?P<article>The|A|An)(?P<rest>(?: \(.*\))?)$")


def article_first(title: str) -> str:
    m = _TRAILING_ARTICLE.match(title)
    return f"{m['article']} {m['base']}{m['rest']}" if m else title


def _value(row: dict, field: str, tpl: dict):
    """A row's value for a placeholder: mapped through the template's `values` table (e.g. gender
    codes to words); a missing value or empty list becomes the template's `missing` word."""
    value = row.get(field)
    if not isinstance(value, list):
        value = tpl.get("values", {}).get(field, {}).get(value, value)
    if value is None or (isinstance(value, list) and not value):
        return [tpl["missing"]] if isinstance(value, list) else tpl["missing"]
    return [str(v) for v in value] if isinstance(value, list) else str(value)


def _pick(alternatives: str | list[str], row: dict) -> str:
    """The first alternative whose placeholders all have a value in the row."""
    options = [alternatives] if isinstance(alternatives, str) else alternatives
    return next((t for t in options if all(row.get(f) not in (None, []) for f in placeholders(t))), options[-1])


def items_text(items: pl.DataFrame, tpl: dict, move_article: bool) -> pl.DataFrame:
    rows = []
    for item in items.iter_rows(named=True):
        if move_article:
            item["title"] = article_first(item["title"])
        name_tpl = _pick(tpl["item_name"], item)
        name, name_spans = render(name_tpl, {f: _value(item, f, tpl) for f in placeholders(name_tpl)})
        text_tpl = _pick(tpl["item_text"], {**item, "name": name})
        text, spans = render(
            text_tpl, {**{f: _value(item, f, tpl) for f in placeholders(text_tpl) if f != "name"}, "name": name}
        )
        # The name's own entities (title, year) sit inside the name span; record them too.
        offset = next(s["start"] for s in spans if s["entity"] == "name")
        spans += [{**s, "start": s["start"] + offset, "end": s["end"] + offset} for s in name_spans]
        rows.append(
            {
                "item_id": item["item_id"],
                "name": name,
                "text": text,
                "spans": sorted(spans, key=lambda s: (s["start"], -s["end"])),
            }
        )
    return pl.DataFrame(rows, schema={"item_id": pl.Int64, "name": pl.String, "text": pl.String, "spans": SPAN})


def users_text(users: pl.DataFrame, tpl: dict) -> pl.DataFrame:
    rows = []
    for user in users.iter_rows(named=True):
        text_tpl = _pick(tpl["user_text"], user)
        text, spans = render(text_tpl, {f: _value(user, f, tpl) for f in placeholders(text_tpl)})
        rows.append({"user_id": user["user_id"], "text": text, "spans": spans})
    return pl.DataFrame(rows, schema={"user_id": pl.Int64, "text": pl.String, "spans": SPAN})


def textualize(tables_dir: str | Path, out_dir: str | Path, *, template: str, move_article: bool) -> None:
    tables = Path(tables_dir)
    tpl = load_template(template, {"item_name": {"title"}, "item_text": {"name"}, "user_text": set(), "missing": None})
    items = items_text(read_parquet(tables / "items.parquet", "ingest"), tpl, move_article)
    users = users_text(read_parquet(tables / "users.parquet", "ingest"), tpl)
    hist = histories_query(scan_parquet(tables / "interactions.parquet", "ingest")).collect()
    with atomic_dir(out_dir) as tmp:
        write_parquet(items, tmp / "items.parquet")
        write_parquet(users, tmp / "users.parquet")
        write_parquet(hist, tmp / "histories.parquet")
    log.info("textualize: %d items, %d users, %d histories", items.height, users.height, hist.height)
