"""Atomic writes clean up the temporaries that killed runs left, and nothing else; in a DVC project
they keep them out of every folder a stage may track."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl

from recpipe.io import atomic_dir, atomic_path, write_parquet


def test_atomic_path_removes_stale_temporaries_of_its_target_only(tmp_path):
    target = tmp_path / "samples.parquet"
    stale = [tmp_path / ".samples.parquet.ab12_xyz.tmp", tmp_path / ".samples.parquet.00000000.tmp"]
    kept = [
        tmp_path / ".other.parquet.ab12_xyz.tmp",  # another target's
        tmp_path / "samples.parquet.bak",
        tmp_path / ".samples.parquet.ab12_xyz.tmp.keep",
        tmp_path / ".samples.parquet.toolongname.tmp",  # not a name tempfile makes
        tmp_path / ".samples.parquet.ab12_xyz",  # a folder-style name: atomic_dir's, not atomic_path's
    ]
    for f in stale + kept:
        f.write_bytes(b"half-written")
    target.write_bytes(b"old")
    df = pl.DataFrame({"a": [1, 2, 3]})
    write_parquet(df, target)
    assert pl.read_parquet(target).equals(df)
    assert not any(f.exists() for f in stale)
    assert all(f.read_bytes() == b"half-written" for f in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["samples.parquet"] + [f.name for f in kept])


def test_atomic_dir_removes_stale_folders_of_its_target_only(tmp_path):
    target = tmp_path / "text" / "ml-100k"
    stale = [tmp_path / "text" / ".ml-100k.k2j3h4g5", tmp_path / "text" / ".ml-100k.9_a8b7c6"]
    kept = [
        tmp_path / "text" / ".ml-100k.staging",
        tmp_path / "text" / ".amazon.k2j3h4g5",
        tmp_path / "text" / "ml-100k.k2j3h4g5",
    ]
    for d in stale + kept:
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "items.parquet").write_bytes(b"half")
    (tmp_path / "text" / ".ml-100k.abcdefgh.tmp").write_bytes(b"a file: atomic_path's")
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert not any(d.exists() for d in stale)
    assert all((d / "sub" / "items.parquet").read_bytes() == b"half" for d in kept)
    assert (tmp_path / "text" / ".ml-100k.abcdefgh.tmp").exists()


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    target = tmp_path / "out.json"
    with atomic_path(target) as outer:
        outer.write_text("outer")
        with atomic_path(target) as inner:  # a second writer of the same target
            inner.write_text("inner")
        assert outer.read_text() == "outer"
    assert target.read_text() == "outer"
    folder = tmp_path / "tables"
    with atomic_dir(folder) as outer:
        (outer / "a").write_text("outer")
        with atomic_dir(folder) as inner:
            (inner / "a").write_text("inner")
        assert (outer / "a").read_text() == "outer"
    assert (folder / "a").read_text() == "outer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "tables"]


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from recpipe.io import atomic_dir, atomic_path
        with atomic_path({str(tmp_path / "samples.parquet")!r}) as f, atomic_dir({str(tmp_path / "ml-100k")!r}) as d:
            f.write_text("half"); (d / "items.parquet").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert len(list(tmp_path.iterdir())) == 2  # the killed run's two temporaries
    write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "samples.parquet")
    with atomic_dir(tmp_path / "ml-100k") as d:
        (d / "items.parquet").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k", "samples.parquet"]
    assert (tmp_path / "ml-100k" / "items.parquet").read_text() == "whole"


def test_in_a_dvc_project_a_killed_writers_temporaries_stay_out_of_its_folders(tmp_path):
    (tmp_path / ".dvc").mkdir()
    script = textwrap.dedent("""
        from recpipe.io import atomic_dir, atomic_path
        with atomic_path("reports/base.json") as f, atomic_dir("data/text/ml-100k") as d:
            f.write_text("half"); (d / "items.parquet").write_text("half")
    """)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "RECPIPE_TEST_KILL_BEFORE_RENAME": "data/text/ml-100k",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [p.name for p in (tmp_path / "data/text").iterdir()] == [] and [
        p.name for p in (tmp_path / "reports").iterdir()
    ] == []
    area = tmp_path / ".recpipe/tmp"
    assert len(list(area.iterdir())) == 2  # the killed run's two temporaries
    with atomic_path(tmp_path / "reports/base.json") as f:
        f.write_text("whole")
    with atomic_dir(tmp_path / "data/text/ml-100k") as d:
        (d / "items.parquet").write_text("whole")
    assert list(area.iterdir()) == []
    assert [p.name for p in (tmp_path / "data/text").iterdir()] == ["ml-100k"]
    assert (tmp_path / "reports/base.json").read_text() == "whole"


def test_a_file_system_mounted_inside_a_project_gets_its_own_temp_area(tmp_path, monkeypatch):
    """A rename cannot cross file systems: a target on a disk mounted at data/ gets its temporary
    in data/.recpipe/tmp, the rest of the project in the project's .recpipe/tmp."""
    (tmp_path / ".dvc").mkdir()
    disk = tmp_path / "data"
    real_stat = Path.stat

    def stat(self, **kwargs):  # data/ and all below it on another device
        st = real_stat(self, **kwargs)
        if self == disk or disk in self.parents:
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev + 1, *st[3:]))
        return st

    monkeypatch.setattr(Path, "stat", stat)
    with atomic_dir(disk / "text/ml-100k") as d, atomic_path(tmp_path / "reports/base.json") as f:
        assert d.parent == disk / ".recpipe/tmp"
        assert f.parent == tmp_path / ".recpipe/tmp"
        f.write_text("{}")
