#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml: bash requirements/lock.sh [--upgrade]
#   cpu.txt  the CPU build of PyTorch, the test and benchmark extras (what the README and CI install)
#   gpu.txt  PyPI's CUDA build of PyTorch with its CUDA libraries, DeepSpeed, and the same extras
# Both for Linux x86_64 and Python 3.11, with every package's sha256. uv keeps the versions a lock
# file already holds unless --upgrade is given; after an upgrade, rerun `dvc repro` and commit
# dvc.lock with the new lock, since a new polars or pyarrow may write other parquet bytes.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH=2.13.0  # the PyTorch release behind the committed results
# Where the CPU build of torch is found: PyTorch's page of wheels, or a local folder of them.
TORCH_CPU_WHEELS=${TORCH_CPU_WHEELS:-https://download.pytorch.org/whl/torch/}

compile() {
  uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --custom-compile-command "bash requirements/lock.sh" \
    --quiet "$@"
}
compile --extra test --extra bench --find-links "$TORCH_CPU_WHEELS" \
  -c <(echo "torch==$TORCH+cpu") -o requirements/cpu.txt "${@}"
compile --extra test --extra bench --extra gpu -c <(echo "torch==$TORCH") -o requirements/gpu.txt "${@}"
