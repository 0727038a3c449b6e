"""Collaborative tokens through the pipeline's steps, on generated data and a tiny random model:
the collab stage's encoders, the hybrid prompts, CoLLM's two-step and one-step training, and
scoring with the projector."""

import json

import polars as pl
import pytest

from conftest import params_dict, source
from recpipe import RecpipeError
from recpipe.cli import STEPS
from recpipe.params.schema import parse
from recpipe.steps import paths
from recpipe.templates import COLLAB_TOKEN
from test_cross_domain import make_tiny_model

PROMPT_WORDS = (
    "### Instruction:\nYou are a movie recommender. Movies the user liked: disliked: User: ### Response:\nYes. No."
)


def collab_params(tmp_path, archives, **collab) -> dict:
    data = params_dict([source("atomic", archives["atomic"])], sample={"k": 8, "valid_size": 10})
    data["model"] = {"name": str(make_tiny_model(tmp_path / "tiny", [PROMPT_WORDS] * 20))}
    data["lora"] = {"rank": 2, "alpha": 4}
    data["train"] = {"epochs": 1, "batch_size": 4, "dtype": "float32"}
    data["evaluate"] = {"batch_size": 8}
    small = {"epochs": 3, "patience": 1}
    data["collab"] = {
        "datasets": ["ml-100k"],
        "train": {"epochs": 1, "batch_size": 4, "dtype": "float32"},
        "sasrec": small,
        "bprmf": small,
        "mid_times": 2,
        **collab,
    }
    return data


def test_tokens_need_the_datasets_encoders(tmp_path, archives):
    data = collab_params(tmp_path, archives, model="mf")
    data["collab"]["datasets"] = []
    with pytest.raises(RecpipeError, match=r"collab.model mf: dataset 'ml-100k' has no collaborative encoders"):
        parse(data)


@pytest.mark.parametrize("model, recipe", [("mf", "two_step"), ("sasrec", "one_step")])
def test_collaborative_tokens_train_and_score(tmp_path, archives, monkeypatch, model, recipe):
    monkeypatch.chdir(tmp_path)
    p = parse(collab_params(tmp_path, archives, model=model, recipe=recipe, tokens=["user", "history", "target"]))
    for step in ("download", "ingest", "textualize"):
        STEPS[step].run(p, "ml-100k")
    for step in ("instructions", "sample"):
        STEPS[step].run(p)
    STEPS["collab"].run(p, "ml-100k")
    assert {"mf", "sasrec"} <= {f.name for f in (tmp_path / "data/collab/ml-100k").iterdir()}
    encoders = json.loads((tmp_path / "reports/collab/ml-100k.json").read_text())
    assert set(encoders) >= {"bprmf", "sasrec"}, encoders
    # Every hybrid prompt has one token for the user and one per item token listed.
    samples = pl.read_parquet(paths.SAMPLES)
    tokens = samples["collab_prompt"].str.count_matches(COLLAB_TOKEN, literal=True)
    assert (tokens == samples["collab_item_ids"].list.len() + 1).all()
    STEPS["train"].run(p)
    adapter = tmp_path / paths.ADAPTER
    assert (adapter / "collab_projector.safetensors").is_file() and (adapter / "adapter_model.safetensors").is_file()
    STEPS["evaluate"].run(p)
    tuned = json.loads((tmp_path / "reports/tuned.json").read_text())
    assert tuned["n"] == samples.filter(pl.col("split") == "test").height
    scores = pl.read_parquet(f"{paths.EVAL}/tuned/predictions.parquet")["p_yes"]
    assert scores.is_between(0, 1).all() and scores.n_unique() > 1


def test_without_tokens_the_samples_have_no_hybrid_columns(tmp_path, archives, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = parse(collab_params(tmp_path, archives))  # collab.model none: today's samples, byte for byte
    for step in ("download", "ingest", "textualize"):
        STEPS[step].run(p, "ml-100k")
    STEPS["instructions"].run(p)
    assert "collab_prompt" not in pl.read_parquet(paths.SAMPLES).columns
