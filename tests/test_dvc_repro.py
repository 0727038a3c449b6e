"""One whole `dvc repro` of a tiny configuration, in a scratch git + DVC repository."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml

from conftest import make_tiny_model, params_dict, source
from recpipe.params.collab import CollabParams
from recpipe.params.p5 import P5Params
from recpipe.params.recsysllm import RecsysllmParams
from test_formats import bx_source, bx_zip

ROOT = Path(__file__).resolve().parents[1]


# The stages run as `python stages/x.py`: put this interpreter's environment first on PATH.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
DVC = [sys.executable, "-m", "dvc"]


def run(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


def write(params: dict, folder: Path) -> None:
    """params.yaml, and the registry (`registry`) as datasets.yaml."""
    (folder / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in params.items() if k != "registry"}))
    (folder / "datasets.yaml").write_text(yaml.safe_dump(params["registry"]))


def test_dvc_repro_tiny(archives, tmp_path):
    for name in ("dvc.yaml", "stages", "recpipe"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    params = params_dict(
        [source("atomic", archives["atomic"], name="bad", sha256="0" * 64), source("atomic", archives["atomic"])]
    )
    texts = [
        "### Instruction:\nYou are a movie recommender. Movies the user liked: disliked: Will the user enjoy ### Response:\nYes. No."
    ]
    params["model"] = {"name": str(make_tiny_model(tmp_path / "tiny-model", texts * 20))}
    params["lora"] = {"rank": 2, "alpha": 4}
    params["train"] = {"epochs": 1, "batch_size": 4, "dtype": "float32", "init": "base"}  # dvc.yaml reads train.init
    params["evaluate"] = {
        "batch_size": 8,
        "dtype": "float32",
        "dataset": None,
        "instructions": None,
    }  # dvc.yaml reads the last two
    params["p5"] = {**P5Params().model_dump(mode="json"), "datasets": []}  # dvc.yaml reads these: no P5 stages yet
    recsysllm = RecsysllmParams().model_dump(mode="json")
    params["recsysllm"] = recsysllm | {  # no pretraining yet; its params sized for the tiny data
        "datasets": [],
        "valid_size": 4,
        "sampling": {**recsysllm["sampling"], "length": 6},
        "lora": {"rank": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "train": {**recsysllm["train"], "batch_size": 8, "dtype": "float32", "max_length": 256},
    }
    params["collab"] = {**CollabParams().model_dump(mode="json"), "datasets": []}  # no collab stages
    write(params, tmp_path)
    run(["git", "init", "-q"], tmp_path)
    run([*DVC, "init", "-q"], tmp_path)
    # dvclive needs a repository with a commit, as any clone of recpipe has.
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"], tmp_path)
    run([*DVC, "repro"], tmp_path)
    for out in (
        "data/tables/ml-100k/items.parquet",
        "data/instructions/samples.parquet",
        "data/sample/train.parquet",
        "data/adapter/adapter_config.json",
        "reports/tuned.json",
        "reports/base.json",
        "reports/roc_tuned.csv",
        "reports/report.md",
        "reports/plots/roc.png",
    ):
        assert (tmp_path / out).is_file(), out
    assert pl.read_parquet(tmp_path / "data/eval/tuned/predictions.parquet").height == 30  # the whole test split
    assert "up to date" in run([*DVC, "status"], tmp_path).stdout
    # A LoRA param reruns training, the tuned evaluation and the report only.
    params["lora"]["rank"] = 4
    write(params, tmp_path)
    out = run([*DVC, "repro"], tmp_path).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"train", "evaluate", "report"}, out
    assert "auc" in run([*DVC, "metrics", "show"], tmp_path).stdout
    # The untuned evaluation, whose outputs are all cached, comes back from DVC's run cache when its
    # inputs do (as in every experiment of a sweep); a stage with an uncached output would rerun.
    for batch_size in (4, 8):
        params["evaluate"]["batch_size"] = batch_size
        write(params, tmp_path)
        out = run([*DVC, "repro"], tmp_path).stdout
    assert "Stage 'evaluate_base' is cached - skipping run" in out, out
    # Adding a dataset is a params change: its own data stages run (foreach); instructions and the
    # report, which can read any prepared dataset (evaluate.dataset), run with the same result.
    params["registry"]["bookcrossing"] = {
        "template": "bookcrossing",
        "rating_max": 10,
        "sources": [bx_source(bx_zip(tmp_path))],
    }
    params["datasets"] = ["ml-100k", "bookcrossing"]
    write(params, tmp_path)
    samples = (tmp_path / "data/instructions/samples.parquet").read_bytes()
    out = run([*DVC, "repro"], tmp_path).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {
        "download@bookcrossing",
        "ingest@bookcrossing",
        "textualize@bookcrossing",
        "instructions",
        "report",
    }, out
    assert (tmp_path / "data/instructions/samples.parquet").read_bytes() == samples
    assert (tmp_path / "data/text/bookcrossing/items.parquet").is_file()
    # The P5 families are opt-in: listing a dataset under p5.datasets adds its own stages, and only
    # they run. Their metrics are one file per family.
    params["p5"] |= {
        "datasets": ["ml-100k"],
        "negatives": 5,
        "k": 16,
        "valid_size": 4,
        "test_cases": 2,
        "beams": 4,
        "top_k": 2,
        "max_new_tokens": 4,
        "eval_batch_size": 4,
        "train": {**params["p5"]["train"], "epochs": 1, "batch_size": 4, "dtype": "float32", "max_length": 256},
        "sasrec": {**params["p5"]["sasrec"], "epochs": 2, "hidden": 16, "max_len": 10},
    }
    write(params, tmp_path)
    out = run([*DVC, "repro"], tmp_path).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    p5_stages = {f"{s}@ml-100k" for s in ("families", "p5_sample", "p5_train", "p5_evaluate", "baselines", "p5_report")}
    assert ran == p5_stages, out
    families = {p.stem for p in (tmp_path / "reports/p5/ml-100k/families").glob("*.json")}
    assert families == {"rating", "sequential", "direct"}  # ML-100K has no review text
    shown = run([*DVC, "metrics", "show"], tmp_path).stdout
    assert "reports/p5/ml-100k/families/sequential.json" in shown and "unseen.hr@1" in shown
    report = (tmp_path / "reports/p5/ml-100k/report.md").read_text()
    assert "SASRec" in report and "unseen" in report
    assert "Paired on the same cases, HR@10" in report  # from both stages' per-case predictions
    # A baseline param reruns the baselines and the P5 report only.
    params["p5"]["sasrec"]["epochs"] = 3
    write(params, tmp_path)
    out = run([*DVC, "repro"], tmp_path).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"baselines@ml-100k", "p5_report@ml-100k"}, out
    # Pretraining is opt-in the same way: listing the dataset adds its one stage, and only it runs.
    params["recsysllm"]["datasets"] = ["ml-100k"]
    write(params, tmp_path)
    out = run([*DVC, "repro"], tmp_path).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"pretrain@ml-100k"}, out
    assert (tmp_path / "data/recsysllm/ml-100k/pretrained/adapter_model.safetensors").is_file()
    assert "valid_loss" in run([*DVC, "metrics", "show", "reports/recsysllm/ml-100k/pretrain.json"], tmp_path).stdout
    # A misspelled key fails the stage with a clear message.
    params["sample"]["kk"] = 8
    write(params, tmp_path)
    bad = subprocess.run([*DVC, "repro"], cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert (
        bad.returncode != 0
        and "error: sample: params.yaml: sample.kk: unknown key (did you mean 'k'?)" in bad.stdout + bad.stderr
    )
    assert "Traceback" not in bad.stdout + bad.stderr  # one clear line, not a stack trace
