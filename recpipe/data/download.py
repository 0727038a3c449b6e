"""The `download` stage: fetch a dataset from the first of its sources that verifies, and keep the raw files."""

from __future__ import annotations

import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from recpipe import RecpipeError, log
from recpipe.io import atomic_dir, sha256_file, write_json
from recpipe.params.registry import DatasetParams
from recpipe.pip import fetch_pip


def _fetch_url(url: str, dest: Path) -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        local = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else url)
        if not local.is_file():
            raise RecpipeError(f"no such file: {local}")
        shutil.copyfile(local, dest)
        return
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, dest.open("wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {parsed.netloc}", file=sys.stderr) as bar:
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.URLError as e:  # unreachable host, refused connection, HTTP 404, ...
        raise RecpipeError(f"cannot fetch {url}: {getattr(e, 'reason', e)}") from None


def fetch(
    name: str, workdir: Path, url: str | None = None, pip: str | None = None, sha256: str | None = None
) -> tuple[Path, str]:
    """Fetch one file (by url or pip requirement) into workdir and verify its checksum; return its path and sha256."""
    if pip is not None:
        path = fetch_pip(pip, workdir)
    else:
        path = workdir / (Path(urllib.parse.urlparse(url).path).name or "download")
        _fetch_url(url, path)
    actual = sha256_file(path)
    if sha256 is None:
        log.warning(
            "source %s has no sha256 to verify; its sha256 is %s (the ingest checks guard the content)", name, actual
        )
    elif actual != sha256.lower():
        raise RecpipeError(
            f"checksum mismatch for source {name!r} ({path.name}): expected sha256 {sha256}, got {actual}"
        )
    return path, actual


def _is_unsafe(member: str) -> bool:
    p = PurePosixPath(member.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or (len(member) > 1 and member[1] == ":")


def extract_members(archive: Path, members: dict[str, str], dest: Path) -> None:
    """Copy the named zip members to dest/<role>, refusing unsafe paths and broken archives."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            unsafe = [n for n in names if _is_unsafe(n)]
            if unsafe:
                raise RecpipeError(
                    f"{archive.name}: unsafe member path {unsafe[0]!r} (absolute or '..'); refusing the archive"
                )
            for role, member in members.items():
                if _is_unsafe(member):
                    raise RecpipeError(f"{archive.name}: unsafe member path {member!r} requested for {role}")
                if member not in names:
                    raise RecpipeError(f"{archive.name}: member {member!r} ({role}) not in the archive")
                with zf.open(member) as src, (dest / role).open("wb") as out:
                    shutil.copyfileobj(src, out)  # zipfile checks each member's CRC while reading
    except (zipfile.BadZipFile, EOFError) as e:
        raise RecpipeError(f"{archive.name}: not a readable zip archive (truncated or corrupt): {e}") from None


def download(name: str, dataset: DatasetParams, out_dir: str | Path) -> dict:
    """Try the sources in order; the first that fetches and verifies fills out_dir. Returns its record."""
    failures = []
    for source in dataset.sources:
        log.info("dataset %s: trying source %s", name, source.name)
        try:
            with tempfile.TemporaryDirectory() as work, atomic_dir(out_dir) as tmp_out:
                record = {"dataset": name, "source": source.name, "format": source.format, "encoding": source.encoding}
                if source.files is not None:  # one file per role, each with its own checksum
                    record["sha256"] = {}
                    for role, remote in source.files.items():
                        (Path(work) / role).mkdir()
                        path, record["sha256"][role] = fetch(
                            f"{source.name}/{role}", Path(work) / role, url=remote.url, sha256=remote.sha256
                        )
                        shutil.copyfile(path, tmp_out / role)
                else:
                    path, record["sha256"] = fetch(
                        source.name, Path(work), url=source.url, pip=source.pip, sha256=source.sha256
                    )
                    if source.archive == "zip":
                        extract_members(path, source.members, tmp_out)
                    else:
                        (role,) = source.members
                        shutil.copyfile(path, tmp_out / role)
                roles = source.files or source.members
                record["files"] = {role: sha256_file(tmp_out / role) for role in roles}
                write_json(record, tmp_out / "source.json")
            log.info("dataset %s: source %s verified", name, source.name)
            return record
        except (RecpipeError, OSError) as e:
            log.warning("source %s failed: %s", source.name, e)
            failures.append(f"{source.name}: {e}")
    raise RecpipeError(f"all sources for dataset {name!r} failed: " + " | ".join(failures))
