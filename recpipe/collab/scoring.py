"""Each collaborative encoder as a scorer of TALLRec's yes/no samples: its own score for a sample
is the dot product of the user vector and the target item's vector (BPR-MF: the user's embedding;
SASRec: the encoding of the sample's history, the items the prompt lists), in float32. The AUC of
those scores against the labels, on all samples and on warm and cold ones.

Warm and cold: a sample is cold when its target item has fewer than `cold_below` interactions in
the encoder's training log (CollabParams.cold_below, 10 by default; an item never trained on has
0), warm otherwise. A fixed count rather than a quantile, so that the columns mean the same on
every dataset and seed; `unseen` counts the targets with no training interaction at all."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from recpipe import RecpipeError, log
from recpipe.collab.encoders import (
    SAMPLE_COLUMNS,
    CollabParams,
    Encoder,
    check_columns,
    load_encoders,
    train_encoders,
)
from recpipe.io import read_parquet, write_json, write_parquet
from recpipe.metrics import auc_metrics


def sample_scores(encoder: Encoder, samples: pl.DataFrame) -> torch.Tensor:
    """float32 [samples.height]: user vector . target item vector, per sample."""
    users = samples["user_id"].to_list()
    histories = [h or [] for h in samples["history_item_ids"].to_list()]
    return (encoder.user_vectors(users, histories) * encoder.item_vectors(samples["item_id"].to_list())).sum(-1)


def auc_of(labels: list[int], scores: list[float]) -> float | None:
    """recpipe.metrics' AUC (None without both classes or without samples)."""
    return auc_metrics(labels, scores)["auc"] if labels else None


def warm_cold_auc(labels: list[int], scores: list[float], cold: list[bool]) -> dict:
    """AUC on every sample, on the warm ones and on the cold ones, with their numbers."""
    warm_at = [k for k, c in enumerate(cold) if not c]
    cold_at = [k for k, c in enumerate(cold) if c]
    return {
        "auc": auc_of(labels, scores),
        "auc_warm": auc_of([labels[k] for k in warm_at], [scores[k] for k in warm_at]),
        "auc_cold": auc_of([labels[k] for k in cold_at], [scores[k] for k in cold_at]),
        "n": len(labels),
        "n_warm": len(warm_at),
        "n_cold": len(cold_at),
    }


def score_samples(
    encoders: dict[str, Encoder], samples: pl.DataFrame, cold_below: int, split: str = "test"
) -> tuple[dict, pl.DataFrame]:
    """Every encoder's AUC on the `split` samples (all, warm, cold; see the module's docstring) and
    the per-sample scores (sample_id, user_id, item_id, label, target's training interactions,
    cold, then one float32 score column per encoder), for paired comparisons with the LLM."""
    check_columns(samples, SAMPLE_COLUMNS | {"sample_id"}, "the samples (the instructions stage's)")
    rows = samples.filter(pl.col("split") == split)
    if not rows.height:
        raise RecpipeError(f"collab: the samples have no {split!r} split to score")
    labels = rows["label"].cast(pl.Int64).to_list()
    item_ids = rows["item_id"].to_list()
    frame = rows.select("sample_id", "user_id", "item_id", pl.col("label").cast(pl.Int8))
    metrics = {"split": split, "cold_below": cold_below}
    for kind, encoder in encoders.items():
        encoder.cold.clear()
        trained = encoder.training_count(item_ids)
        cold = [c < cold_below for c in trained]
        scores = sample_scores(encoder, rows)
        metrics[kind] = warm_cold_auc(labels, scores.tolist(), cold) | {
            "unseen_items": sum(c == 0 for c in trained),
            "cold_users": encoder.cold["users"],
        }
        if "target_training_interactions" not in frame.columns:
            frame = frame.with_columns(
                target_training_interactions=pl.Series(trained, dtype=pl.Int64), cold=pl.Series(cold)
            )
        frame = frame.with_columns(pl.Series(kind, scores.numpy(), dtype=pl.Float32))
        log.info(
            "collab: %s: %s AUC %s (warm %s on %d, cold %s on %d)",
            kind,
            split,
            metrics[kind]["auc"],
            metrics[kind]["auc_warm"],
            metrics[kind]["n_warm"],
            metrics[kind]["auc_cold"],
            metrics[kind]["n_cold"],
        )
    return metrics, frame


def collab(
    interactions_path: str | Path,
    samples_path: str | Path,
    out_dir: str | Path,
    metrics_path: str | Path,
    params: CollabParams,
    seed: int,
    held_out: pl.DataFrame | None = None,
) -> dict:
    """The stage: train both encoders on the dataset's interactions (ingest's interactions.parquet)
    without TALLRec's valid and test pairs (samples.parquet) and `held_out`'s, save them under
    out_dir/mf and out_dir/sasrec, score the test samples (out_dir/scores.parquet) and write the
    AUCs with each fit's validation figures to metrics_path; returns those metrics."""
    interactions = read_parquet(interactions_path, "ingest")
    samples = read_parquet(samples_path, "instructions")
    train_encoders(interactions, samples, out_dir, params, seed, held_out)
    encoders = load_encoders(out_dir)  # scored as saved: what a later stage loads
    metrics, frame = score_samples(encoders, samples, params.cold_below)
    for kind, encoder in encoders.items():
        v = encoder.meta["validation"]
        keys = ("best_epoch", "best_valid_ndcg@10", "best_valid_auc", "epochs_run", "valid_auc")
        metrics[kind] |= {"objective": encoder.meta.get("objective", "ranking")} | {k: v[k] for k in keys if k in v}
    write_parquet(frame, Path(out_dir) / "scores.parquet")
    write_json(metrics, metrics_path)
    return metrics
