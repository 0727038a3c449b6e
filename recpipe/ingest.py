"""Stage 2: read whichever raw format arrived into canonical, validated parquet tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from recpipe import RecpipeError, log
from recpipe.io import atomic_dir, write_parquet

# The 19 genre flags of GroupLens u.item, in file order (from the dataset's u.genre).
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip

# Canonical columns per table, in order.
COLUMNS = {
    "interactions": ["user_id", "item_id", "rating", "timestamp"],
    "items": ["item_id", "title", "year", "genres"],
    "users": ["user_id", "age", "gender", "occupation", "zip_code"],
}


def _read_text_table(path: Path, encoding: str, separator: str, names: list[str] | None) -> pl.DataFrame:
    """Read a delimited file as strings; names=None means the first line is a header."""
    text = path.read_bytes().decode(encoding, errors="strict").replace("\r\n", "\n")
    lines = [line for line in text.split("\n") if line.strip()]
    rows = [line.split(separator) for line in (lines if names is not None else lines[1:])]
    header = names if names is not None else lines[0].split(separator) if lines else []
    bad = [(i, len(r)) for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        i, n = bad[0]
        line_no = i + (1 if names is not None else 2)
        raise RecpipeError(f"{path}: {len(bad)} malformed rows, e.g. line {line_no} has {n} fields, expected {len(header)}")
    return pl.DataFrame(rows, schema=header, orient="row")


def _cast(df: pl.DataFrame, column: str, dtype, path: Path) -> pl.DataFrame:
    """Cast a string column, failing with the file, column, count and examples of bad values."""
    cast = df[column].str.strip_chars().cast(dtype, strict=False)
    bad = df.filter(cast.is_null() & df[column].is_not_null())
    if bad.height:
        examples = bad[column].head(3).to_list()
        raise RecpipeError(f"{path}: column {column!r}: {bad.height} values are not {dtype}, e.g. {examples}")
    return df.with_columns(cast.alias(column))


def _require(df: pl.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RecpipeError(f"{path}: missing columns {missing} (found {df.columns})")


def _year(s: pl.Expr) -> pl.Expr:
    return s.str.extract(r"(\d{4})\s*$").cast(pl.Int32, strict=False)


def read_grouplens(raw: Path, encoding: str) -> dict[str, pl.DataFrame]:
    inter = _read_text_table(raw / "interactions", encoding, "\t", COLUMNS["interactions"])
    items = _read_text_table(raw / "items", encoding, "|", ["item_id", "title", "date", "video_date", "url", *ML100K_GENRES])
    users = _read_text_table(raw / "users", encoding, "|", COLUMNS["users"])
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
    for role in COLUMNS:
        df = _read_text_table(raw / role, encoding, "\t", None)
        df = df.rename({c: renames.get(c.split(":")[0], c.split(":")[0]) for c in df.columns})
        tables[role] = df
    items = tables["items"]
    _require(items, COLUMNS["items"], raw / "items")
    tables["items"] = items.with_columns(
        year=_year(pl.col("year")),  # odd values such as 'unkonwn' or 'V' become null
        genres=pl.col("genres").str.split(" ").list.eval(pl.element().filter(pl.element() != "")),
    )
    return tables


def _schemas(rating_min: float, rating_max: float) -> dict[str, pa.DataFrameSchema]:
    return {
        "interactions": pa.DataFrameSchema(
            {
                "user_id": pa.Column(pl.Int64, nullable=False),
                "item_id": pa.Column(pl.Int64, nullable=False),
                "rating": pa.Column(pl.Float64, pa.Check.in_range(rating_min, rating_max), nullable=False),
                "timestamp": pa.Column(pl.Int64, pa.Check.ge(0), nullable=False),
            },
            unique=["user_id", "item_id"],
            strict=True,
        ),
        "items": pa.DataFrameSchema(
            {
                "item_id": pa.Column(pl.Int64, nullable=False, unique=True),
                "title": pa.Column(pl.String, pa.Check.str_length(min_value=1), nullable=False),
                "year": pa.Column(pl.Int32, nullable=True),
                "genres": pa.Column(pl.List(pl.String), nullable=False),
            },
            strict=True,
        ),
        "users": pa.DataFrameSchema(
            {
                "user_id": pa.Column(pl.Int64, nullable=False, unique=True),
                "age": pa.Column(pl.Int64, pa.Check.in_range(0, 130), nullable=True),
                "gender": pa.Column(pl.String, nullable=True),
                "occupation": pa.Column(pl.String, nullable=True),
                "zip_code": pa.Column(pl.String, nullable=True),
            },
            strict=True,
        ),
    }


def _validate(schema: pa.DataFrameSchema, df: pl.DataFrame, path: Path) -> None:
    try:
        schema.validate(df, lazy=True)
    except (SchemaErrors, SchemaError) as e:
        cases = e.failure_cases if isinstance(e, SchemaErrors) else None
        if cases is None or not len(cases):
            raise RecpipeError(f"{path}: {str(e).splitlines()[0]}") from None
        cases = pl.DataFrame(cases) if not isinstance(cases, pl.DataFrame) else cases
        first = cases.row(0, named=True)
        n = cases.filter(pl.col("column").eq_missing(first["column"]) & (pl.col("check") == first["check"])).height
        examples = cases.filter(pl.col("check") == first["check"])["failure_case"].head(3).to_list()
        raise RecpipeError(
            f"{path}: column {first['column']!r} fails {first['check']} in {n} rows, e.g. {examples}"
        ) from None


def canonicalize(tables: dict[str, pl.DataFrame], raw: Path, rating_min: float, rating_max: float) -> dict[str, pl.DataFrame]:
    """Select, type and validate the canonical tables; raise on the first problem found."""
    typed = {}
    int_cols = {"interactions": ["user_id", "item_id", "timestamp"], "items": ["item_id"], "users": ["user_id", "age"]}
    for role, df in tables.items():
        path = raw / role
        _require(df, COLUMNS[role], path)
        df = df.select(COLUMNS[role])
        for col in int_cols[role]:
            df = _cast(df, col, pl.Int64, path)
        if role == "interactions":
            df = _cast(df, "rating", pl.Float64, path)
        if role == "items":
            df = df.with_columns(pl.col("title").str.strip_chars())
        _validate(_schemas(rating_min, rating_max)[role], df, path)
        typed[role] = df
    inter = typed["interactions"]
    for key, role in (("item_id", "items"), ("user_id", "users")):
        orphans = inter.join(typed[role], on=key, how="anti")
        if orphans.height:
            raise RecpipeError(
                f"{raw / 'interactions'}: column {key!r}: {orphans.height} interactions name an id missing from "
                f"{raw / role}, e.g. {orphans[key].unique(maintain_order=True).head(3).to_list()}"
            )
    # Interactions keep their file order (the paper split's user order needs it); the rest sort by id.
    typed["items"] = typed["items"].sort("item_id")
    typed["users"] = typed["users"].sort("user_id")
    return typed


def ingest(raw_dir: str | Path, out_dir: str | Path, rating_min: float = 1, rating_max: float = 5) -> dict[str, pl.DataFrame]:
    raw = Path(raw_dir)
    record = json.loads((raw / "source.json").read_text())
    reader = {"grouplens": read_grouplens, "atomic": read_atomic}[record["format"]]
    try:
        tables = reader(raw, record["encoding"])
    except UnicodeDecodeError as e:
        raise RecpipeError(f"{raw}: a file is not valid {record['encoding']}: {e}") from None
    tables = canonicalize(tables, raw, rating_min, rating_max)
    with atomic_dir(out_dir) as tmp:
        for role, df in tables.items():
            write_parquet(df, tmp / f"{role}.parquet")
            log.info("ingest: %s: %d rows", role, df.height)
    return tables
