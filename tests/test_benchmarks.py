"""Every script in benchmarks/ runs once on tiny inputs (the synthetic MovieLens-like data and a
tiny random model), so none can rot unnoticed. Only that they run and print their comparison is
checked, never how fast anything was."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_tiny_model
from test_text_instructions_sample import built  # noqa: F401  (module fixture: the data stages' outputs)

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

# Per script: its arguments for a tiny run ({data}: the data stages' output folder, {model}: a tiny
# model folder) and what the line with the ratio of its two sides looks like. A new benchmark needs
# an entry here (test_every_benchmark_has_a_tiny_run).
TINY = {
    "data_scale.py": (
        "--sizes 3000",
        [r"speed-up: [\d.]+x over pandas, .*identical samples: True"],
    ),
    "data_stages.py": (
        "--tables {data}/tables --repeats 1",
        [r"speed-up: [\d.]+x .*identical samples and prompts: True"],
    ),
    "decoding.py": (
        "--model {model} --text {data}/text --n 2 --beams 2 --k 2 --history-len 3",
        [
            r"constrained vs free: [\d.]+x the prompts/s",
            r"prompt run once vs per beam: [\d.]+x faster; same items: True",
        ],
    ),
    "direct_ranking.py": (
        "--model {model} --text {data}/text --n 2 --beams 3 --k 2 --candidates 6 --history-len 3 --dtype float32",
        [r"scoring vs beam search: [\d.]+x faster"],
    ),
    "eval_throughput.py": (
        "--model {model} --samples {data}/instructions/samples.parquet --n 4 --batch-size 2 --mm-size 128 --compare float32:auto,bfloat16:auto",
        [r"speed-up: [\d.]+x", r"bfloat16:auto +[\d.]+ +[\d.]+ +[\d.]+%", r"hardware limit: torch\.mm .* GFLOP/s"],
    ),
    "lora_speed.py": (
        "--model {model} --batch-size 2 --length 16 --steps 2 --dtype float32 --mm-size 128",
        [r"TALLRec adapter .* [\d.]+x +[\d.]+%", r"hardware limit: torch\.mm .* GFLOP/s"],
    ),
    "pretrain_throughput.py": (
        "--model {model} --text {data}/text --batch-size 2 --steps 1 --dtype float32 --mm-size 128",
        [r"masked vs causal: [\d.]+x the text tokens/s", r"hardware limit: torch\.mm .* GFLOP/s"],
    ),
    "train_profile.py": (
        "--model {model} --train {data}/sample/train.parquet --batch-size 2 --steps 1 --dtype float32 --mm-size 128",
        [
            r"eager vs sdpa: [\d.]+x the tokens/s",
            r"auto vs sdpa: [\d.]+x the tokens/s",
            r"hardware limit: torch\.mm .* GFLOP/s",
        ],
    ),
    "train_throughput.py": (
        "--model {model} --train {data}/sample/train.parquet --steps 1 --batch-size 2 --max-length 128 --dtype float32 --mm-size 128",
        [
            r"recpipe vs naive: .* [\d.]+x the tokens/s",
            r"recpipe vs recpipe, sdpa attention: [\d.]+x",
            r"same useful tokens on every side: True",
            r"hardware limit: torch\.mm .* GFLOP/s",
        ],
    ),
}


def test_every_benchmark_has_a_tiny_run():
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(TINY), "give each script in benchmarks/ a tiny run in TINY (and drop entries of removed ones)"


@pytest.fixture(scope="module")
def tiny_model(built, tmp_path_factory):  # noqa: F811
    _, samples = built
    return make_tiny_model(tmp_path_factory.mktemp("model"), (samples["prompt"] + samples["answer"]).to_list())


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_on_tiny_inputs(script, built, tiny_model, tmp_path):  # noqa: F811
    args, patterns = TINY[script]
    for name in ("params.yaml", "datasets.yaml"):  # read from the working directory, as in the repo
        shutil.copy(REPO / name, tmp_path / name)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": "1",  # tiny matrices: extra threads only add overhead, more so on a busy CPU
    }
    argv = args.format(data=built[0], model=tiny_model).split()
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *argv],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for pattern in patterns:
        assert re.search(pattern, proc.stdout), f"{script}: no line matching {pattern!r} in:\n{proc.stdout[-3000:]}"
