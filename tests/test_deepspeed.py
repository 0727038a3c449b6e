"""DeepSpeed ZeRO-2 and ZeRO-3 through the real train path, on CPU with the gloo backend.

The runs happen in a child process: DeepSpeed sets up a process group and environment that
would leak into the other tests of this pytest process."""

import json
import subprocess
import sys

import pytest

from recpipe import RecpipeError
from recpipe.model.load import answer_token_ids, load
from recpipe.model.train import deepspeed_config
from recpipe.tallrec.evaluate import score
from test_text_instructions_sample import built  # noqa: F401
from test_train_evaluate import tiny  # noqa: F401  (module fixture: the tiny model)

CHILD = """
import json, sys
from recpipe.params.model import ModelParams
from recpipe.params.train import LoraParams, TrainParams
from recpipe.model.train import train
root, model, out = sys.argv[1], sys.argv[2], sys.argv[3]
results = {}
for stage in ("zero2", "zero3"):
    results[stage] = train(
        f"{root}/sample/train.parquet", f"{root}/sample/valid.parquet", f"{out}/{stage}", f"{out}/{stage}.json",
        ModelParams(name=model), LoraParams(rank=4, alpha=8),
        TrainParams(epochs=1, batch_size=4, lr=1e-2, dtype="float32", deepspeed=stage),
        seed=0, live_dir=f"{out}/live-{stage}", checkpoints=f"{out}/ckpt",
    )
print(json.dumps(results))
"""


def test_zero2_and_zero3_train_an_adapter_on_cpu(tiny, built, tmp_path):  # noqa: F811
    root, samples = built
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(tiny), str(tmp_path)], capture_output=True, text=True, timeout=1500
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    from peft import PeftModel

    prompts = samples["prompt"].head(4).to_list()
    for stage in ("zero2", "zero3"):
        assert results[stage]["train_loss"] > 0
        base, tok = load(str(tiny))
        model = PeftModel.from_pretrained(base, tmp_path / stage)
        lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert lora_b and all(p.numel() > 0 for p in lora_b)  # ZeRO-3 saved gathered weights, not empty shards
        assert any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: training moved it
        yes, no = answer_token_ids(tok, "Yes.", "No.")
        assert all(0 < p < 1 for p in score(model, tok, prompts, yes, no, batch_size=16))
    # One process, same seed and data: the two ZeRO stages do the same arithmetic.
    assert results["zero2"]["train_loss"] == pytest.approx(results["zero3"]["train_loss"], rel=1e-3)


def test_deepspeed_param_errors(tmp_path):
    with pytest.raises(RecpipeError, match="train.deepspeed 'zero4': no such config"):
        deepspeed_config("zero4")
    with pytest.raises(RecpipeError, match="train.deepspeed"):
        deepspeed_config(str(tmp_path / "missing.json"))
    assert deepspeed_config(None) is None
    assert json.loads(open(deepspeed_config("zero3")).read())["zero_optimization"]["stage"] == 3


LAUNCHED = """
import json, os, sys
from recpipe.params.model import ModelParams
from recpipe.params.train import LoraParams, TrainParams
from recpipe.model.train import train
root, model, out = sys.argv[1], sys.argv[2], sys.argv[3]
m = train(
    f"{root}/sample/train.parquet", f"{root}/sample/valid.parquet", f"{out}/adapter", f"{out}/train.json",
    ModelParams(name=model), LoraParams(rank=4, alpha=8),
    TrainParams(epochs=1, batch_size=2, lr=1e-2, dtype="float32", deepspeed="zero2"),
    seed=0, live_dir=f"{out}/live", checkpoints=f"{out}/ckpt",
)
print("rank", os.environ["RANK"], "of", os.environ["WORLD_SIZE"], "loss", m["train_loss"], flush=True)
"""


def test_two_processes_under_a_launcher_write_once(tiny, built, tmp_path):  # noqa: F811
    """torchrun starts two gloo processes on the CPU, as the deepspeed launcher does on GPUs:
    both train, only the first writes the adapter, the metrics and the dvclive logs."""
    root, _ = built
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(root),
        str(tiny),
        str(tmp_path),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(line.split()[1] for line in run.stdout.splitlines() if line.startswith("rank")) == ["0", "1"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "train.json").read_text())["train_loss"] > 0
    assert (tmp_path / "live" / "metrics.json").is_file()
    assert not list(tmp_path.glob(".adapter*")) and not list(
        tmp_path.glob("ckpt/*/checkpoint-*")
    )  # no staging or checkpoint left
