"""The `ingest` stage: read whichever raw format arrived into canonical, validated parquet tables."""

from __future__ import annotations

from pathlib import Path

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from recpipe import RecpipeError, log
from recpipe.data.formats import COLUMNS, FAMILY, READERS
from recpipe.io import atomic_dir, read_mapping, write_parquet
from recpipe.params.registry import DatasetParams


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


NOT_NULL = {"user_id", "item_id", "title", "row"}
# Besides the format's columns, each interaction keeps `row`, its position in the source file (from 0,
# before any filter): the tie-break of recpipe's one chronological order (recpipe.data.splits.CHRONO_KEY).
ROW = {"row": pl.Int64}


def canonical_columns(family: str) -> dict[str, dict]:
    """Each table's canonical columns and types: the format family's, and `row` for interactions."""
    return {role: {**columns, **(ROW if role == "interactions" else {})} for role, columns in COLUMNS[family].items()}


def _checks(column: str, rating_min: float, rating_max: float) -> list[pa.Check]:
    """Checks beyond the type, for the columns that have them (in any format)."""
    return {
        "rating": [pa.Check.in_range(rating_min, rating_max)],
        "timestamp": [pa.Check.ge(0)],
        "title": [pa.Check.str_length(min_value=1)],
        "age": [pa.Check.in_range(0, 130)],
    }.get(column, [])


def schemas(
    family: str, rating_min: float, rating_max: float, implicit_kept: bool = False
) -> dict[str, pa.DataFrameSchema]:
    """pandera schemas of one format family's canonical tables: types, ranges, null ids, unique keys."""
    out = {}
    for role, columns in canonical_columns(family).items():
        cols = {}
        for name, dtype in columns.items():
            nullable = name not in NOT_NULL
            if role == "interactions" and name == "rating":
                nullable = implicit_kept  # a kept implicit interaction has no rating
            if role == "interactions" and name == "timestamp":
                nullable = family == "bookcrossing"  # the only source without times
            unique = (name == f"{role[:-1]}_id" and role != "interactions") or name == "row"
            cols[name] = pa.Column(dtype, _checks(name, rating_min, rating_max), nullable=nullable, unique=unique)
        key = {"unique": ["user_id", "item_id"]} if role == "interactions" else {}
        out[role] = pa.DataFrameSchema(cols, strict=True, **key)
    return out


def _validate(schema: pa.DataFrameSchema, df: pl.DataFrame, path: Path) -> None:
    try:
        schema.validate(df, lazy=True)
    except (SchemaErrors, SchemaError) as e:
        cases = e.failure_cases if isinstance(e, SchemaErrors) else None
        if cases is None or not len(cases):
            raise RecpipeError(f"{path}: {str(e).splitlines()[0]}") from None
        cases = pl.DataFrame(cases) if not isinstance(cases, pl.DataFrame) else cases
        first = cases.row(0, named=True)
        if first["column"] is None and schema.unique:  # the one whole-table check: the unique key
            _repeated_keys(df, list(schema.unique), path)
        n = cases.filter(pl.col("column").eq_missing(first["column"]) & (pl.col("check") == first["check"])).height
        examples = cases.filter(pl.col("check") == first["check"])["failure_case"].head(3).to_list()
        raise RecpipeError(
            f"{path}: column {first['column']!r} fails {first['check']} in {n} rows, e.g. {examples}"
        ) from None


def _repeated_keys(df: pl.DataFrame, key: list[str], path: Path) -> None:
    """Fail naming the key columns, how many keys repeat, and the rows of the first one."""
    # Interactions carry `row`, their position in the source file (from 0): name the file's rows.
    repeated = df.filter(pl.struct(key).is_duplicated())
    if repeated.height:
        first = repeated.row(0, named=True)
        rows = repeated.filter(pl.all_horizontal(pl.col(k) == first[k] for k in key))
        examples = "; ".join(f"data row {r.pop('row') + 1}: {r}" for r in rows.head(2).to_dicts())
        n = repeated.select(key).unique().height
        raise RecpipeError(
            f"{path}: columns {key} must be unique together (one row per key), but {n} {'key repeats' if n == 1 else 'keys repeat'} "
            f"in {repeated.height} rows, e.g. {examples}"
        )


def k_core(inter: pl.DataFrame, k: int) -> pl.DataFrame:
    """Drop users and items with fewer than k interactions, repeatedly, until none is left."""
    while True:
        kept = inter.filter((pl.len().over("user_id") >= k) & (pl.len().over("item_id") >= k))
        if kept.height == inter.height:
            return kept
        inter = kept


def canonicalize(
    tables: dict[str, pl.DataFrame], raw: Path, fmt: str, dataset: DatasetParams | None = None
) -> dict[str, pl.DataFrame]:
    """Select, type, filter and validate the canonical tables; raise on the first problem found."""
    dataset = dataset or DatasetParams.model_construct()
    family = FAMILY[fmt]
    keep_implicit = dataset.implicit == "keep"
    typed = {}
    for role, columns in canonical_columns(family).items():
        path = raw / role
        df = tables[role]
        if role == "interactions":  # before anything is filtered: the position in the source file
            df = df.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
        _require(df, list(columns), path)
        df = df.select(list(columns))
        for col, dtype in columns.items():
            if df[col].dtype == pl.String and dtype in (pl.Int64, pl.Float64):
                df = _cast(df, col, dtype, path)
        if role == "items":
            df = df.with_columns(pl.col("title").str.strip_chars())
        typed[role] = df
    inter = typed["interactions"]
    implicit = inter.filter(pl.col("rating").is_null()).height
    if implicit and not keep_implicit:
        log.info("ingest: dropped %d implicit interactions (no rating; datasets.yaml: <name>.implicit: drop)", implicit)
        inter = inter.filter(pl.col("rating").is_not_null())
    if dataset.k_core:
        before = inter.height
        inter = k_core(inter, dataset.k_core)
        log.info("ingest: %d-core filter kept %d of %d interactions", dataset.k_core, inter.height, before)
    typed["interactions"] = inter
    for role, df in typed.items():
        _validate(schemas(family, dataset.rating_min, dataset.rating_max, keep_implicit)[role], df, raw / role)
    for key, role in (("item_id", "items"), ("user_id", "users")):
        orphans = inter.join(typed[role], on=key, how="anti")
        if orphans.height:
            raise RecpipeError(
                f"{raw / 'interactions'}: column {key!r}: {orphans.height} interactions name an id missing from "
                f"{raw / role}, e.g. {orphans[key].unique(maintain_order=True).head(3).to_list()}"
            )
        # Items and users that nobody interacts with (after filtering) carry no signal.
        typed[role] = typed[role].join(inter.select(key).unique(), on=key, how="semi")
    # Interactions keep their file order (the paper split's user order needs it); the rest sort by id.
    typed["items"] = typed["items"].sort("item_id")
    typed["users"] = typed["users"].sort("user_id")
    return typed


def ingest(raw_dir: str | Path, out_dir: str | Path, dataset: DatasetParams | None = None) -> dict[str, pl.DataFrame]:
    raw = Path(raw_dir)
    record = read_mapping(raw / "source.json", "download")
    tables = READERS[record["format"]](raw, record["encoding"])
    tables = canonicalize(tables, raw, record["format"], dataset)
    with atomic_dir(out_dir) as tmp:
        for role, df in tables.items():
            write_parquet(df, tmp / f"{role}.parquet")
            log.info("ingest: %s: %d rows", role, df.height)
    return tables
