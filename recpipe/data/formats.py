"""Readers for each raw format a dataset can arrive in, and the canonical columns each one yields.

A reader takes the folder the download stage filled (one file per role: interactions, items,
users) and returns one table per role. Ids that are strings in the source (Amazon ASINs and
reviewer ids, ISBNs) become integers numbered in sorted order of the string, which is kept in a
column of its own. ingest.py types, filters and validates what the readers return."""

from __future__ import annotations

import ast
import codecs
import csv
import gzip
import html
import io
import json
import re
from pathlib import Path

import polars as pl

from recpipe import RecpipeError, log

# The 19 genre flags of GroupLens u.item, in file order (from the dataset's u.genre).
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]

ID = pl.Int64
STR, LIST = pl.String, pl.List(pl.String)
_INTERACTIONS = {"user_id": ID, "item_id": ID, "rating": pl.Float64, "timestamp": pl.Int64}

# Canonical columns and types per format family, per table, in order.
COLUMNS = {
    "movielens": {
        "interactions": _INTERACTIONS,
        "items": {"item_id": ID, "title": STR, "year": pl.Int32, "genres": LIST},
        "users": {"user_id": ID, "age": pl.Int64, "gender": STR, "occupation": STR, "zip_code": STR},
    },
    "amazon": {
        "interactions": {**_INTERACTIONS, "summary": STR, "review": STR},
        "items": {"item_id": ID, "asin": STR, "title": STR, "brand": STR, "categories": LIST, "price": pl.Float64},
        "users": {"user_id": ID, "reviewer_id": STR, "name": STR},
    },
    "bookcrossing": {
        "interactions": _INTERACTIONS,  # BookCrossing has no times: timestamp is null
        "items": {"item_id": ID, "isbn": STR, "title": STR, "author": STR, "year": pl.Int32, "publisher": STR},
        "users": {"user_id": ID, "location": STR, "age": pl.Int64},
    },
}
FAMILY = {"grouplens": "movielens", "atomic": "movielens", "amazon": "amazon", "bookcrossing": "bookcrossing"}


def read_bytes(path: Path) -> bytes:
    """A raw file's bytes, gunzipped when it is a gzip file (Amazon's dumps are kept compressed)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError) as e:
            raise RecpipeError(f"{path}: not a readable gzip file (truncated or corrupt): {e}") from None
    return data


def read_text(path: Path, encoding: str) -> str:
    try:
        return read_bytes(path).decode(encoding, errors="strict").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise RecpipeError(f"{path}: not valid {encoding} at byte {e.start}: {e.reason}") from None


def read_utf8(path: Path, encoding: str) -> bytes:
    """A raw file's bytes as UTF-8 (what Polars' CSV reader takes), checked strictly in its encoding.
    ASCII bytes (most ratings files) are passed on as they are, without a decoded copy."""
    data = read_bytes(path)
    if data.isascii():
        return data
    try:
        text = data.decode(encoding, errors="strict")
    except UnicodeDecodeError as e:
        raise RecpipeError(f"{path}: not valid {encoding} at byte {e.start}: {e.reason}") from None
    return data if codecs.lookup(encoding).name == "utf-8" else text.encode("utf-8")


# A byte that separates no field of the text formats read here: Polars then reads each line whole.
_WHOLE_LINE = "\x1f"


def _read_text_table(path: Path, encoding: str, separator: str, names: list[str] | None) -> pl.DataFrame:
    """Read a delimited file as strings; names=None means the first line is a header. Blank lines
    are skipped; a line with another number of fields than the header is an error that names it
    (counting the non-blank lines from 1)."""
    data = read_utf8(path, encoding)
    if _WHOLE_LINE.encode() in data:
        raise RecpipeError(f"{path}: holds the control byte 0x1f, which no text table may contain")
    lines = pl.read_csv(
        data, has_header=False, separator=_WHOLE_LINE, quote_char=None, schema={"line": STR}, raise_if_empty=False
    )
    lines = (
        lines.lazy()
        .select(pl.col("line").str.strip_suffix("\r"))
        .filter(pl.col("line").str.strip_chars() != "")
        .collect()
    )
    if names is None:
        header = lines["line"][0].split(separator) if lines.height else []
        lines, first_line = lines.slice(1), 2
    else:
        header, first_line = names, 1
    fields = pl.col("line").str.count_matches(separator, literal=True) + 1
    bad = lines.lazy().with_row_index("i").filter(fields != len(header)).select("i", n=fields).collect()
    if bad.height:
        i, n = bad.row(0)
        raise RecpipeError(
            f"{path}: {bad.height} malformed rows, e.g. line {i + first_line} has {n} fields, expected {len(header)}"
        )
    if not header:
        return pl.DataFrame()
    tmp = [f"_{i}" for i in range(len(header))]
    parts = pl.col("line").str.split_exact(separator, len(header) - 1).struct.rename_fields(tmp)
    return lines.lazy().select(parts).unnest("line").rename(dict(zip(tmp, header))).collect()


def _year(s: pl.Expr) -> pl.Expr:
    return s.str.extract(r"(\d{4})\s*$").cast(pl.Int32, strict=False)


def read_grouplens(raw: Path, encoding: str) -> dict[str, pl.DataFrame]:
    inter = _read_text_table(raw / "interactions", encoding, "\t", list(_INTERACTIONS))
    items = _read_text_table(
        raw / "items", encoding, "|", ["item_id", "title", "date", "video_date", "url", *ML100K_GENRES]
    )
    users = _read_text_table(raw / "users", encoding, "|", list(COLUMNS["movielens"]["users"]))
    flags = [pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in ML100K_GENRES]
    items = items.with_columns(
        # "Toy Story (1995)": the year is the trailing parenthesis, else the release date's year.
        year=pl.coalesce(_year(pl.col("title").str.extract(r"\((\d{4})\)\s*$")), _year(pl.col("date"))),
        title=pl.col("title").str.replace(r"\s*\(\d{4}\)\s*$", ""),
        genres=pl.concat_list(flags).list.drop_nulls(),
    )
    return {"interactions": inter, "items": items, "users": users}


def read_atomic(raw: Path, encoding: str) -> dict[str, pl.DataFrame]:
    """RecBole atomic files: tab-separated with typed headers such as `rating:float`."""
    renames = {"movie_title": "title", "release_year": "year", "class": "genres"}
    tables = {}
    for role in ("interactions", "items", "users"):
        df = _read_text_table(raw / role, encoding, "\t", None)
        tables[role] = df.rename({c: renames.get(c.split(":")[0], c.split(":")[0]) for c in df.columns})
    items = tables["items"]
    missing = [c for c in ("year", "genres") if c not in items.columns]
    if missing:
        raise RecpipeError(f"{raw / 'items'}: missing columns {missing} (found {items.columns})")
    tables["items"] = items.with_columns(
        year=_year(pl.col("year")),  # odd values such as 'unkonwn' or 'V' become null
        genres=pl.col("genres").str.split(" ").list.eval(pl.element().filter(pl.element() != "")),
    )
    return tables


def _number_keys(keys: pl.Series) -> dict[str, int]:
    """String ids -> 1..n in sorted order: the numbering depends only on which ids exist."""
    return {k: i for i, k in enumerate(sorted(set(keys.to_list())), start=1)}


def _json_lines(path: Path, encoding: str):
    for n, line in enumerate(read_text(path, encoding).split("\n"), start=1):
        if line.strip():
            yield n, line


def _clean(text: str | None) -> str | None:
    """Unescape HTML entities ("Tom &amp; Jerry") and trim; empty becomes None."""
    if text is None:
        return None
    text = html.unescape(str(text)).strip()
    return text or None


_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")


def read_amazon(raw: Path, encoding: str) -> dict[str, pl.DataFrame]:
    """The 2014 Amazon dumps: reviews as JSON lines, metadata as Python-literal lines (never eval'd).

    A user who reviewed an item twice keeps the later review (then the later line). Items with no
    metadata record or no title cannot be written as text: they and their reviews are dropped,
    and counted in the log."""
    path = raw / "interactions"
    reviews = []
    for n, line in _json_lines(path, encoding):
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecpipeError(f"{path}:{n}: not a JSON review record: {e.msg}") from None
        missing = [
            k
            for k in ("reviewerID", "asin", "overall", "unixReviewTime")
            if not isinstance(r, dict) or r.get(k) is None
        ]
        if missing:
            raise RecpipeError(f"{path}:{n}: review record lacks {missing}")
        try:
            rating, ts = float(r["overall"]), int(r["unixReviewTime"])
        except (TypeError, ValueError):
            raise RecpipeError(
                f"{path}:{n}: 'overall' and 'unixReviewTime' must be numbers, got {r['overall']!r}, {r['unixReviewTime']!r}"
            ) from None
        reviews.append(
            (
                str(r["reviewerID"]),
                str(r["asin"]),
                rating,
                ts,
                _clean(r.get("summary")),
                _clean(r.get("reviewText")),
                _clean(r.get("reviewerName")),
                n,
            )
        )
    inter = pl.DataFrame(
        reviews,
        schema=["reviewer_id", "asin", "rating", "timestamp", "summary", "review", "name", "line"],
        orient="row",
    )
    n_all = inter.height
    inter = inter.sort(["reviewer_id", "asin", "timestamp", "line"]).unique(
        ["reviewer_id", "asin"], keep="last", maintain_order=True
    )
    if inter.height < n_all:
        log.warning(
            "%s: %d duplicate reviews of the same item by the same user: kept the latest of each",
            path,
            n_all - inter.height,
        )

    path = raw / "items"
    wanted = set(inter["asin"].to_list())
    meta = []
    for n, line in _json_lines(path, encoding):
        m = _ASIN.search(line)
        if m and m.group(1) not in wanted:
            continue  # the metadata dump covers the whole category; parse only the reviewed items
        try:
            rec = ast.literal_eval(line)  # literals only: a record holding code is refused, not run
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as e:
            raise RecpipeError(
                f"{path}:{n}: metadata record is not a plain Python literal ({type(e).__name__}); refusing it"
            ) from None
        if not isinstance(rec, dict) or not isinstance(rec.get("asin"), str):
            raise RecpipeError(f"{path}:{n}: metadata record is not a dict with an 'asin' string")
        cats = [c for path_ in rec.get("categories") or [] for c in path_]
        price = rec.get("price")
        meta.append(
            (
                rec["asin"],
                _clean(rec.get("title")),
                _clean(rec.get("brand")),
                list(dict.fromkeys(map(str, cats))),
                float(price) if isinstance(price, (int, float)) else None,
            )
        )
    items = pl.DataFrame(
        meta, schema={"asin": STR, "title": STR, "brand": STR, "categories": LIST, "price": pl.Float64}, orient="row"
    )
    items = items.unique("asin", keep="first", maintain_order=True).filter(pl.col("title").is_not_null())
    dropped = inter.join(items, on="asin", how="anti")
    if dropped.height:
        log.warning(
            "%s: %d reviews of %d items with no metadata or no title were dropped",
            raw,
            dropped.height,
            dropped["asin"].n_unique(),
        )
        inter = inter.join(items.select("asin"), on="asin", how="semi")
    items = items.join(inter.select("asin").unique(), on="asin", how="semi")

    item_ids, user_ids = _number_keys(items["asin"]), _number_keys(inter["reviewer_id"])
    items = items.with_columns(item_id=pl.col("asin").replace_strict(item_ids, return_dtype=ID))
    users = (
        inter.sort(["reviewer_id", "timestamp", "line"])
        .group_by("reviewer_id", maintain_order=True)
        .agg(name=pl.col("name").drop_nulls().last())  # the name on the user's latest review
        .with_columns(user_id=pl.col("reviewer_id").replace_strict(user_ids, return_dtype=ID))
    )
    inter = inter.sort("line").with_columns(
        user_id=pl.col("reviewer_id").replace_strict(user_ids, return_dtype=ID),
        item_id=pl.col("asin").replace_strict(item_ids, return_dtype=ID),
    )
    return {"interactions": inter, "items": items, "users": users}


def _bx_rows(path: Path, encoding: str, columns: list[str]) -> list[list[str]]:
    """Rows of a BX-*.csv file: ';'-separated, every field quoted, with a header line.

    Quirks of the real dump handled here: a few titles end in a stray backslash before the
    closing quote, and titles carry HTML entities (unescaped later)."""
    reader = csv.reader(
        io.StringIO(read_text(path, encoding)), delimiter=";", quotechar='"', doublequote=True, strict=False
    )
    header = next(reader, None)
    if header is None:
        raise RecpipeError(f"{path}: empty file")
    if header[: len(columns)] != columns:
        raise RecpipeError(f"{path}: expected columns {columns}, found {header}")
    rows = []
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise RecpipeError(f"{path}:{reader.line_num}: {len(row)} fields, expected {len(header)}")
        rows.append([field.rstrip("\\") for field in row[: len(columns)]])
    return rows


def _int_or_null(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isdigit() else None


def read_bookcrossing(raw: Path, encoding: str) -> dict[str, pl.DataFrame]:
    """The BX-CSV-Dump. Rating 0 is an implicit interaction (a book the user handled without
    rating it): it arrives with a null rating, and ingest keeps or drops it by a parameter.
    Ratings of ISBNs missing from BX-Books.csv are dropped and counted; implausible ages (under 5
    or over 110) become unknown."""
    path = raw / "interactions"
    ratings = []
    for user, isbn, rating in _bx_rows(path, encoding, ["User-ID", "ISBN", "Book-Rating"]):
        if not user.strip().isdigit() or not rating.strip().isdigit():
            raise RecpipeError(
                f"{path}: row {user!r};{isbn!r};{rating!r}: User-ID and Book-Rating must be whole numbers"
            )
        r = int(rating)
        ratings.append((int(user), isbn.strip().upper(), float(r) if r > 0 else None))
    inter = pl.DataFrame(ratings, schema={"user_id": ID, "isbn": STR, "rating": pl.Float64}, orient="row")
    n_all = inter.height
    inter = inter.unique(["user_id", "isbn"], keep="last", maintain_order=True)  # ISBNs that differ only in case
    if inter.height < n_all:
        log.warning("%s: %d repeated (user, ISBN) ratings: kept the last of each", path, n_all - inter.height)

    books = _bx_rows(raw / "items", encoding, ["ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher"])
    items = (
        pl.DataFrame(
            [
                (b[0].strip().upper(), _clean(b[1]), _clean(b[2]), _int_or_null(b[3]) or None, _clean(b[4]))
                for b in books
            ],
            schema={"isbn": STR, "title": STR, "author": STR, "year": pl.Int32, "publisher": STR},
            orient="row",
        )
        .unique("isbn", keep="first", maintain_order=True)
        .filter(pl.col("title").is_not_null())
    )
    unknown = inter.join(items, on="isbn", how="anti")
    if unknown.height:
        log.warning("%s: %d ratings name an ISBN with no book record: dropped", path, unknown.height)
        inter = inter.join(items.select("isbn"), on="isbn", how="semi")
    items = items.join(inter.select("isbn").unique(), on="isbn", how="semi")
    item_ids = _number_keys(items["isbn"])
    items = items.with_columns(item_id=pl.col("isbn").replace_strict(item_ids, return_dtype=ID))
    inter = inter.with_columns(
        item_id=pl.col("isbn").replace_strict(item_ids, return_dtype=ID), timestamp=pl.lit(None, pl.Int64)
    )

    people = _bx_rows(raw / "users", encoding, ["User-ID", "Location", "Age"])
    users = pl.DataFrame(
        [(_int_or_null(u[0]), _clean(u[1]), _int_or_null(u[2])) for u in people],
        schema={"user_id": ID, "location": STR, "age": pl.Int64},
        orient="row",
    )
    implausible = users.filter((pl.col("age") < 5) | (pl.col("age") > 110)).height
    if implausible:
        log.warning("%s: %d implausible ages (under 5 or over 110) read as unknown", raw / "users", implausible)
    users = users.with_columns(age=pl.when(pl.col("age").is_between(5, 110)).then(pl.col("age")))
    return {"interactions": inter, "items": items, "users": users}


READERS = {"grouplens": read_grouplens, "atomic": read_atomic, "amazon": read_amazon, "bookcrossing": read_bookcrossing}
