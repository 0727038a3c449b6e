"""Atomic writes: every output is written to a temporary and renamed into place. And the one way
mappings (JSON, YAML) and parquet files are read back, with errors that name the file.

Where temporaries live: a killed run (`kill -9`, a power cut) leaves its temporary behind, and one
left inside a folder that DVC hashes (data/text is a dependency of instructions, and a stage
restored from DVC's run cache runs none of our code to clean it) would change the next run. So in
a DVC project (the nearest folder above the target with a `.dvc` folder) every temporary lives in
the project's `.recpipe/tmp/`, which no stage tracks and .gitignore and .dvcignore exclude. A
rename cannot cross file systems: when the target's file system is mounted inside the project
(data/ on another disk), the temporary goes to `.recpipe/tmp/` of that mount's top folder, which
.dvcignore excludes too. Outside a DVC project (the model cache, tests' folders), it goes next to
the target.

Each write first removes the temporaries of its own target (by name) that dead writers left: a
writer holds an flock on its temporary while it writes, and a killed one loses it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl

from recpipe import RecpipeError

try:
    import fcntl
except ImportError:  # not POSIX: no locks to tell a killed run's temporaries from a live one's
    fcntl = None

# The names tempfile gives: the prefix, then 8 characters of this alphabet, then the suffix.
_RANDOM = r"[a-z0-9_]{8}"
TEMP_AREA = ".recpipe/tmp"


def _temp_folder(path: Path) -> Path:
    """The folder for the temporary of `path` (see the module's docstring): the `.recpipe/tmp/` of
    the DVC project holding `path`, in the highest folder of the project on `path`'s file system;
    `path`'s own folder outside a project."""
    parent = path.parent.absolute()
    device = parent.stat().st_dev
    top, on_its_fs = parent, True  # top: the highest folder so far on `path`'s file system
    for folder in (parent, *parent.parents):
        on_its_fs = on_its_fs and folder.stat().st_dev == device
        if on_its_fs:
            top = folder
        if (folder / ".dvc").is_dir():
            area = top / TEMP_AREA
            area.mkdir(parents=True, exist_ok=True)
            return area
    return parent


def _locked(fd: int) -> bool:
    """Take an exclusive lock on an open file or folder; False if another process holds it. Each
    writer holds the lock of its own temporary while it writes, and a killed one loses it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _remove_stale(path: Path, where: Path, folder: bool) -> None:
    """Remove the temporaries of `path` in `where` that killed runs left (`.{name}.XXXXXXXX.tmp`
    files, or `.{name}.XXXXXXXX` folders): only this target's, and none that a live writer holds."""
    if fcntl is None:
        return
    pattern = re.compile(re.escape(f".{path.name}.") + _RANDOM + ("" if folder else re.escape(".tmp")))
    for entry in where.iterdir():
        if not pattern.fullmatch(entry.name) or entry.is_symlink() or entry.is_dir() != folder:
            continue
        try:
            fd = os.open(entry, os.O_RDONLY)
        except OSError:  # gone meanwhile, or not ours
            continue
        try:
            if _locked(fd):
                shutil.rmtree(entry, ignore_errors=True) if folder else entry.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _test_kill_before_rename(path: Path) -> None:
    """Test hook: with RECPIPE_TEST_KILL_BEFORE_RENAME set to `path`, this process kills itself
    (SIGKILL, as `kill -9` would) once the temporary of `path` is written, before the rename."""
    target = os.environ.get("RECPIPE_TEST_KILL_BEFORE_RENAME")
    if target and Path(target).absolute() == path.absolute():
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path (see the module's docstring for where); rename it onto `path` only if
    the block succeeds. Temporaries of `path` left by killed runs are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    where = _temp_folder(path)
    _remove_stale(path, where, folder=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=where)
    tmp = Path(tmp)
    try:
        if fcntl is not None:
            _locked(fd)
        yield tmp
        _test_kill_before_rename(path)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a fresh temporary directory (see the module's docstring for where); it replaces `path`
    whole only if the block succeeds. Temporary folders of `path` left by killed runs are removed
    first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    where = _temp_folder(path)
    _remove_stale(path, where, folder=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=where))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary data folder
    fd = os.open(tmp, os.O_RDONLY) if fcntl is not None else None
    try:
        if fd is not None:
            _locked(fd)
        yield tmp
        _test_kill_before_rename(path)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if fd is not None:
            os.close(fd)


def write_parquet(df: pl.DataFrame, path: str | Path) -> None:
    # No statistics timestamps or writer-dependent metadata: same data, same bytes.
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=False)


# Rows per row group of a streamed parquet file: fixed, so the bytes do not depend on how the rows
# arrived in batches (a file of fewer rows is one row group, as write_parquet writes it).
ROW_GROUP = 100_000


def sink_parquet(batches: Callable[[], Iterator[pl.DataFrame]], schema: dict, path: str | Path) -> None:
    """Write the DataFrames that `batches()` yields, in order, as one parquet file with
    write_parquet's settings, holding only a batch or so in memory at a time."""
    from polars.io.plugins import register_io_source

    def source(with_columns, predicate, n_rows, batch_size) -> Iterator[pl.DataFrame]:
        empty = True
        for batch in batches():
            empty = False
            yield batch
        if empty:
            yield pl.DataFrame(schema=schema)

    with atomic_path(path) as tmp:
        register_io_source(source, schema=schema).sink_parquet(
            tmp, compression="zstd", statistics=False, row_group_size=ROW_GROUP
        )


def write_json(obj, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_png(fig, path: str | Path) -> None:
    """A matplotlib figure as PNG, with no software/version stamp: the same data gives the same bytes."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _written_by(made_by: str | None) -> str:
    return f" (the {made_by} stage writes it)" if made_by else ""


@contextlib.contextmanager
def _parquet_errors(path: Path, made_by: str | None):
    """Turn a missing file, or one polars cannot read as parquet (truncated, empty, not parquet
    at all), into a RecpipeError that names it."""
    if not path.is_file():
        raise RecpipeError(f"{path}: not found" + _written_by(made_by))
    try:
        yield
    except (pl.exceptions.PolarsError, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RecpipeError(f"{path}: not a readable parquet file ({reason})" + _written_by(made_by)) from None


def read_parquet(path: str | Path, made_by: str | None = None, **options) -> pl.DataFrame:
    """A parquet file the pipeline wrote (pl.read_parquet's `options`). A RecpipeError names the
    file when it is missing (and the stage that writes it, given made_by) or unreadable."""
    path = Path(path)
    with _parquet_errors(path, made_by):
        return pl.read_parquet(path, **options)


def scan_parquet(path: str | Path, made_by: str | None = None) -> pl.LazyFrame:
    """read_parquet's lazy twin. Its footer is read here, so that a truncated or foreign file fails
    now, naming it, rather than wherever the query is collected."""
    path = Path(path)
    with _parquet_errors(path, made_by):
        pl.read_parquet_schema(path)
    return pl.scan_parquet(path)


def read_mapping(path: str | Path, made_by: str | None = None) -> dict:
    """A JSON (.json) or YAML file holding a mapping. A RecpipeError names the file when it is
    missing (and the stage that writes it, given made_by), empty, unparsable, or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise RecpipeError(f"{path}: not found" + _written_by(made_by))
    if path.suffix == ".json":
        kind = "a JSON object"
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise RecpipeError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    else:
        import yaml

        kind = "a mapping"
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise RecpipeError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if data is None:
        raise RecpipeError(f"{path}: the file is empty (expected {kind})")
    if not isinstance(data, dict):
        raise RecpipeError(f"{path}: expected {kind}, got {type(data).__name__}")
    return data
