"""A data stage killed with `kill -9` while it writes leaves nothing that changes the next run, in a
scratch git + DVC repository: a plain `dvc repro` then gives the uninterrupted run's dvc.lock."""

import shutil
import subprocess

from conftest import params_dict, source
from recpipe.params.collab import CollabParams
from recpipe.params.p5 import P5Params
from recpipe.params.recsysllm import RecsysllmParams
from test_dvc_repro import DVC, ENV, ROOT, run, write

# Each data stage and the output it is killed writing (its temporary written, not yet renamed).
KILLED = {
    "download@ml-100k": "data/raw/ml-100k",
    "ingest@ml-100k": "data/tables/ml-100k",
    "textualize@ml-100k": "data/text/ml-100k",
    "instructions": "data/instructions/samples.parquet",
    "sample": "data/sample",
}


def test_a_killed_data_stage_does_not_change_the_next_runs_lock(archives, tmp_path):
    for name in ("dvc.yaml", "stages", "recpipe"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    params = params_dict([source("atomic", archives["atomic"])])
    params["evaluate"] = {"dataset": None, "instructions": None}  # dvc.yaml reads these
    params["p5"] = {**P5Params().model_dump(mode="json"), "datasets": []}
    params["recsysllm"] = {**RecsysllmParams().model_dump(mode="json"), "datasets": []}
    params["collab"] = {**CollabParams().model_dump(mode="json"), "datasets": []}
    write(params, tmp_path)
    run(["git", "init", "-q"], tmp_path)
    run([*DVC, "init", "-q"], tmp_path)
    run([*DVC, "repro", "sample"], tmp_path)
    uninterrupted = (tmp_path / "dvc.lock").read_text()
    # Every stage's run is now in DVC's run cache: a rerun restores a killed stage's outputs without
    # running its code, so nothing the killed run left is cleaned by it.
    for stage, out in KILLED.items():
        env = {**ENV, "RECPIPE_TEST_KILL_BEFORE_RENAME": out}
        killed = subprocess.run(
            [*DVC, "repro", "--force", "--single-item", stage], cwd=tmp_path, capture_output=True, text=True, env=env
        )
        # -9 when the shell execs the command, 137 (128 + SIGKILL) when the shell runs it as a child
        said = killed.stdout + killed.stderr
        assert killed.returncode != 0 and ("exited with -9" in said or "exited with 137" in said), said
        assert not (tmp_path / out).exists(), out
        rerun = run([*DVC, "repro", "sample"], tmp_path).stdout
        assert "Running stage" not in rerun, f"killed {stage}, then:\n{rerun}"  # all restored, nothing rerun
        assert (tmp_path / "dvc.lock").read_text() == uninterrupted, f"killed {stage}"
        hidden = [str(p.relative_to(tmp_path)) for p in (tmp_path / "data").rglob(".*") if p.name != ".gitignore"]
        assert hidden == [], f"killed {stage}: its temporaries among the outputs"
