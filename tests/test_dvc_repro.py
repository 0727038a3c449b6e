"""One whole `dvc repro` of a tiny configuration, in a scratch git + DVC repository."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import params_dict, source

ROOT = Path(__file__).resolve().parents[1]


# The stages run as `python stages/x.py`: put this interpreter's environment first on PATH.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
DVC = [sys.executable, "-m", "dvc"]


def run(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_dvc_repro_tiny(archives, tmp_path):
    for name in ("dvc.yaml", "stages", "recpipe"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    params = params_dict([source("atomic", archives["atomic"], name="bad", sha256="0" * 64), source("atomic", archives["atomic"])])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "init", "-q"], tmp_path)
    run([*DVC, "init", "-q"], tmp_path)
    run([*DVC, "repro"], tmp_path)
    for out in ("data/tables/items.parquet", "data/instructions/samples.parquet", "data/sample/train.parquet"):
        assert (tmp_path / out).is_file(), out
    assert "up to date" in run([*DVC, "status"], tmp_path).stdout
    # Changing a sample param reruns only the sample stage.
    params["sample"]["k"] = 8
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = run([*DVC, "repro"], tmp_path).stdout
    assert "Running stage 'sample'" in out and "Running stage 'instructions'" not in out
    # A misspelled key fails the stage with a clear message.
    params["sample"]["kk"] = 8
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = subprocess.run([*DVC, "repro"], cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert bad.returncode != 0 and "sample.kk: unknown key (did you mean 'k'?)" in bad.stdout + bad.stderr
