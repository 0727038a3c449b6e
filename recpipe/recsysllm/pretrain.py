"""RecSysLLM's masked pretraining as a task of recpipe's one training loop (recpipe.model.train),
and the pretrained start that TALLRec and P5 fine-tune from.

The pretraining adapter holds, besides its LoRA weights, the rows of the five special tokens
(peft's trainable_token_indices: only those rows train and are saved) and, with 2D positions, the
intra-position embedding (a module of the model that peft saves with the adapter). Fine-tuning
from it merges all three into the base model and puts a fresh adapter on top.
"""

from __future__ import annotations

import json
import random
from functools import partial
from pathlib import Path

import polars as pl
import torch

from recpipe import RecpipeError, log
from recpipe.io import read_parquet, sha256_file, write_parquet
from recpipe.model.train import Task, TaskBuilder, labelled_columns, summed_loss, train
from recpipe.params.model import ModelParams
from recpipe.params.recsysllm import RecsysllmParams
from recpipe.recsysllm.corpus import BehaviourSampling, documents
from recpipe.recsysllm.infill import (
    InfillConfig,
    IntraEmbedding,
    build_all,
    collate,
    infill_forward,
    special_token_ids,
)

INTRA = "intra"  # the base model's attribute holding the IntraEmbedding
INTRA_SIZE = 64  # intra ids past the table share its last row; entity names run to a few dozen tokens


def infill_config(r: RecsysllmParams) -> InfillConfig:
    return InfillConfig(
        objectives=tuple(r.objectives.items()),
        ratio=r.ratio,
        span_mean=r.span_mean,
        document=tuple(r.document),
        whole_entities=r.whole_entities,
        order=r.order,
    )


def sampling(r: RecsysllmParams) -> BehaviourSampling:
    s = r.sampling
    return BehaviourSampling(
        mode=s.mode, length=s.length, shares=tuple(s.shares), short_days=s.short_days, medium_days=s.medium_days
    )


def corpus(text_dir, held_out: pl.DataFrame, r: RecsysllmParams, seed: int) -> pl.DataFrame:
    """One text per user (recsysllm.corpus.documents) from textualize's output, with no held-out
    (user_id, item_id) event, and `split`: valid for `valid_size` users drawn with the seed."""
    text = Path(text_dir)
    users, items, histories = (
        read_parquet(text / f"{name}.parquet", "textualize") for name in ("users", "items", "histories")
    )
    docs = documents(users, items, histories, held_out, sampling(r), seed)
    if docs.height <= r.valid_size:
        raise RecpipeError(f"recsysllm.valid_size is {r.valid_size}, but {text} gives only {docs.height} users' texts")
    valid = set(random.Random(f"valid:{seed}").sample(docs["user_id"].to_list(), r.valid_size))
    return docs.with_columns(
        split=pl.when(pl.col("user_id").is_in(list(valid))).then(pl.lit("valid")).otherwise(pl.lit("train"))
    )


def add_special_tokens(model, tokenizer, positions_2d: bool) -> list[int]:
    """Add [MASK] [sMASK] [gMASK] [START] [END] to the tokenizer and their rows to the model, each
    starting as the mean of the rows before them (no random draw: loading repeats it exactly, and
    the adapter stores only what training added); with 2D positions, attach a zero intra
    embedding. Returns the new tokens' ids."""
    ids = sorted(special_token_ids(tokenizer).values())
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for layer in (model.get_input_embeddings(), model.get_output_embeddings()):  # tied: the same rows twice
            layer.weight[ids] = layer.weight[: ids[0]].float().mean(0).to(layer.weight.dtype)
    if positions_2d:
        model.add_module(INTRA, IntraEmbedding(INTRA_SIZE, model.config.hidden_size))
    return ids


def trainable_rows(model, ids: list[int]) -> dict[str, list[int]]:
    """peft's trainable_token_indices: the new rows of the input embeddings, and of the output
    layer when it is not tied to them (peft ties a tied one itself)."""
    names = {id(m): name.rsplit(".", 1)[-1] for name, m in model.named_modules()}
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    rows = {names[id(embed)]: ids}
    if head.weight.data_ptr() != embed.weight.data_ptr():
        rows[names[id(head)]] = ids
    return rows


def intra_module(model):
    """The model's intra embedding (peft wraps it, calling through to the trained copy), or None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, INTRA, None)


def infill_loss(model, batch: dict[str, torch.Tensor]):
    """Summed cross-entropy over part B's targets (each span's tokens and [END]), their count, and
    the output; logits only at the positions that predict them."""
    targets, columns = labelled_columns(batch)
    out = infill_forward(model, batch, intra_module(model), logits_to_keep=columns)
    return summed_loss(out, targets[:, columns])


def samples(
    docs: pl.DataFrame, tokenizer, ids: dict[str, int], r: RecsysllmParams, seed: int, max_length: int
) -> list[dict]:
    """build_all's samples of `docs`; without 2D positions, plain positions and no intra ids."""
    rows = build_all(docs, tokenizer, ids, infill_config(r), seed, copies=r.copies)
    if not r.positions_2d:
        rows = [
            {**row, "position_ids": list(range(len(row["input_ids"]))), "intra_ids": [0] * len(row["input_ids"])}
            for row in rows
        ]
    kept = [row for row in rows if len(row["input_ids"]) <= max_length]
    if len(kept) < len(rows):
        log.warning(
            "pretrain: left out %d of %d samples longer than recsysllm.train.max_length (%d tokens)",
            len(rows) - len(kept),
            len(rows),
            max_length,
        )
    return kept


def infill_task(docs: pl.DataFrame, r: RecsysllmParams, seed: int) -> TaskBuilder:
    """The masked-pretraining task on a corpus (train and valid rows by `split`)."""

    def build(model, tokenizer) -> Task:
        new = add_special_tokens(model, tokenizer, r.positions_2d)
        ids = special_token_ids(tokenizer)
        train_docs, valid_docs = (docs.filter(pl.col("split") == s) for s in ("train", "valid"))
        extras = {
            "trainable_token_indices": trainable_rows(model, new),
            **({"modules_to_save": [INTRA]} if r.positions_2d else {}),
        }
        return Task(
            rows=samples(train_docs, tokenizer, ids, r, seed, r.train.max_length),
            valid=samples(valid_docs, tokenizer, ids, r, seed, r.train.max_length),
            collate=partial(collate, pad_id=tokenizer.pad_token_id),
            loss=infill_loss,
            key=(docs.to_dicts(), r.model_dump(mode="json", exclude={"datasets", "lora", "train"})),
            lora_extras=extras,
        )

    return build


def pretrain(
    text_dir,
    held_out: pl.DataFrame,
    corpus_path,
    out_dir,
    metrics_path,
    model_p: ModelParams,
    r: RecsysllmParams,
    seed: int,
    live_dir,
    checkpoints,
    run_path=None,
) -> dict:
    """Write the corpus (corpus_path), pretrain on it and save the adapter with the special-token
    rows and the intra embedding to out_dir; returns the metrics (train_loss, valid_loss)."""
    docs = corpus(text_dir, held_out, r, seed)
    write_parquet(docs, corpus_path)  # atomic
    log.info(
        "pretrain: %d texts (%d for validation), %d held-out events left out",
        docs.height,
        r.valid_size,
        held_out.height,
    )
    return train(
        None,
        None,
        out_dir,
        metrics_path,
        model_p,
        r.lora,
        r.train,
        seed,
        live_dir=live_dir,
        checkpoints=checkpoints,
        run_path=run_path,
        task=infill_task(docs, r, seed),
    )


class Pretrained:
    """A training start (recpipe.model.train's `init`): the base model with a pretraining adapter
    folder merged in. `key` names the adapter's weights, so a checkpoint never resumes on another."""

    def __init__(self, folder):
        self.folder = Path(folder)
        weights = self.folder / "adapter_model.safetensors"
        if not weights.is_file():
            raise RecpipeError(
                f"{self.folder}: no pretrained adapter (run the pretrain stage first: dvc repro pretrain@<dataset>)"
            )
        self.key = sha256_file(weights)

    def __call__(self, model, tokenizer):
        return load_pretrained(model, tokenizer, self.folder)


def load_pretrained(model, tokenizer, folder, merge: bool = True):
    """The base model with the pretraining adapter in `folder`: its special-token rows, intra
    embedding and LoRA weights, merged into plain weights (merge=False: the PeftModel)."""
    from peft import PeftModel

    folder = Path(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    saved = sorted({i for rows in (config.get("trainable_token_indices") or {}).values() for i in rows})
    ids = add_special_tokens(model, tokenizer, INTRA in (config.get("modules_to_save") or []))
    if ids != saved:
        raise RecpipeError(
            f"{folder}: its special tokens have ids {saved}, but this model's tokenizer gives them {ids} (pretrained on another model?)"
        )
    model = PeftModel.from_pretrained(model, str(folder))
    return model.merge_and_unload() if merge else model
