"""CoLLM's collaborative tokens (Zhang et al. 2023, arXiv 2310.19488), the model side: a small MLP,
the projector, maps a collaborative-filtering model's user and item vectors into the LM's
input-embedding space, and each projected vector takes the place of one placeholder token in a
hybrid prompt; the answer is still scored as P(yes) of the first answer token.

Where the CF vectors come from is the caller's business: every function here takes them as float32
tensors, one [placeholders in the prompt, cf_dim] tensor per sample, in the order the placeholders
appear in its prompt.

Two recipes (recpipe.model.train.train with collab_task):
- two_step: step 1 is TALLRec's text-only LoRA tuning (train() without collab, prompts without
  placeholders); step 2 starts from step 1's adapter, keeps its LoRA weights frozen and trains the
  projector on the hybrid prompts.
- one_step: a fresh LoRA adapter and the projector train together on the hybrid prompts.

The projector lives on the model as the module `collab_projector`: while training, peft's
modules_to_save trains and checkpoints it with the adapter; the saved adapter folder then gets it
in files of its own (collab_projector.safetensors and collab_projector.json, its sizes), so the
folder's adapter is a plain LoRA adapter any loader reads, and attach_projector adds the projector
to a model loaded with it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

from recpipe import RecpipeError, log
from recpipe.io import read_parquet, sha256_file, write_json
from recpipe.model.decoding import PrefixCache, shared_prefix_length
from recpipe.model.train import (
    IGNORE,
    PadCollator,
    Task,
    TaskBuilder,
    checkpointing,
    labelled_columns,
    summed_loss,
)
from recpipe.params.collab import CollabParams
from recpipe.templates import COLLAB_TOKEN

# A placeholder in a prompt's text: one CF vector goes there. The prompt is split at each one and
# the pieces are tokenized apart (placeholder_tokens), so whatever the tokenizer would merge
# across it, the placeholder is exactly one position, and no token ever belongs to both sides.
# The marker is plain text that item titles do not contain; no token is added to the vocabulary.
PLACEHOLDER = COLLAB_TOKEN
PROJECTOR = "collab_projector"  # the module's name on the model, and the stem of its files

# samples (rows with user_id, item_id, ...) -> one float32 [placeholders, cf_dim] tensor per row
CFVectors = Callable[[pl.DataFrame], list[torch.Tensor]]


class CollabProjector(torch.nn.Module):
    """CoLLM's mapping: Linear(cf_dim, mid_dim), ReLU, Linear(mid_dim, hidden_size), one LM token
    per CF vector. Float32 whatever the model's dtype; collab_embeds casts its output."""

    def __init__(self, cf_dim: int, mid_dim: int, hidden_size: int):
        super().__init__()
        self.dims = {"cf_dim": cf_dim, "mid_dim": mid_dim, "hidden_size": hidden_size}
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(cf_dim, mid_dim), torch.nn.ReLU(), torch.nn.Linear(mid_dim, hidden_size)
        ).float()

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.mlp(vectors.float())


def add_projector(model, cf_dim: int, mid_times: int) -> CollabProjector:
    """A new projector on the model (module `collab_projector`), on its embeddings' device."""
    embed = model.get_input_embeddings()
    projector = CollabProjector(cf_dim, cf_dim * mid_times, embed.embedding_dim).to(embed.weight.device)
    model.add_module(PROJECTOR, projector)
    return projector


def projector_of(model):
    """The model's projector (under peft, the wrapper that calls the trained copy)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    projector = getattr(base, PROJECTOR, None)
    if projector is None:
        raise RecpipeError(
            "the model has no collab projector: load the adapter folder's with attach_projector before scoring with CF vectors"
        )
    return projector


def placeholder_tokens(tokenizer, prompt: str) -> tuple[list[int], list[int]]:
    """The prompt's token ids, and where its placeholders sit among them. The first piece gets the
    special tokens a whole prompt gets (BOS), the others none; a prompt without placeholders gives
    tokenizer(prompt).input_ids. A placeholder's id is the pad id: any id would do, as its
    embedding is replaced (collab_embeds), but the pad id exists in every tokenizer recpipe loads."""
    first, *rest = prompt.split(PLACEHOLDER)
    ids = list(tokenizer(first).input_ids)
    at = []
    for piece in rest:
        at.append(len(ids))
        ids.append(tokenizer.pad_token_id)
        ids += tokenizer(piece, add_special_tokens=False).input_ids
    return ids, at


def checked_vectors(vectors: list[torch.Tensor], holes: list[list[int]]) -> list[torch.Tensor]:
    """The samples' CF vectors as float32 on the CPU, after checking each has one row per
    placeholder and all have the same width. Detached: the CF model stays frozen (CoLLM's
    freeze_rec), only the projector learns from them."""
    if len(vectors) != len(holes):
        raise RecpipeError(f"collab: {len(vectors)} samples' CF vectors for {len(holes)} prompts")
    checked, width = [], None
    for i, (v, at) in enumerate(zip(vectors, holes)):
        v = torch.as_tensor(v).detach().cpu()
        if v.ndim != 2 or v.shape[0] != len(at):
            raise RecpipeError(
                f"collab: sample {i} has {len(at)} placeholders ({PLACEHOLDER}) in its prompt but CF vectors of shape {tuple(v.shape)}; expected ({len(at)}, cf_dim)"
            )
        width = v.shape[1] if width is None else width
        if v.shape[1] != width:
            raise RecpipeError(f"collab: sample {i} has CF vectors of width {v.shape[1]}, sample 0 of width {width}")
        checked.append(v.float())
    return checked


def encode_prompts(tokenizer, prompts: list[str], vectors: list[torch.Tensor]):
    """placeholder_tokens of each prompt, and the checked vectors: (ids, holes, vectors)."""
    encoded = [placeholder_tokens(tokenizer, p) for p in prompts]
    ids, holes = [e[0] for e in encoded], [e[1] for e in encoded]
    return ids, holes, checked_vectors(vectors, holes)


def collab_embeds(model, input_ids: torch.Tensor, at: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """The model's inputs_embeds for a batch: its token embeddings, with the projected CF vectors in
    place of the placeholders. at: [n, 2] (row, column) of each placeholder in input_ids; vectors:
    [n, cf_dim], in the same order. The projected vectors are cast to the embeddings' dtype."""
    if len(at) != len(vectors):
        raise RecpipeError(f"collab: {len(vectors)} CF vectors for {len(at)} placeholders in the batch")
    embeds = model.get_input_embeddings()(input_ids)
    if not len(at):
        return embeds
    at = at.to(embeds.device)
    projected = projector_of(model)(vectors.to(embeds.device)).to(embeds.dtype)
    return embeds.index_put((at[:, 0], at[:, 1]), projected)  # a new tensor: gradients reach both sides


def first_placeholder(at: torch.Tensor, width: int) -> int:
    """The first column any row has a placeholder in (width if none): a prefix shared through a
    cache must end before it, as the cache holds token embeddings only."""
    return int(at[:, 1].min()) if len(at) else width


# Training


def encode_collab(
    prompts: list[str], answers: list[str], vectors: list[torch.Tensor], tokenizer, max_length: int
) -> list[dict]:
    """recpipe.model.train.encode's rows (prompt + answer + EOS, labels on the answer, a long
    prompt losing its start) with each row's placeholder positions (collab_at) and CF vectors
    (collab). A placeholder in a cut start goes with its vector."""
    ids, holes, vectors = encode_prompts(tokenizer, prompts, vectors)
    rows, dropped = [], 0
    for p, at, v, answer in zip(ids, holes, vectors, answers):
        a = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        cut = max(len(p) - max(max_length - len(a), 1), 0)
        kept = [pos - cut for pos in at if pos >= cut]
        dropped += len(at) - len(kept)
        rows.append(
            {
                "input_ids": p[cut:] + a,
                "labels": [IGNORE] * (len(p) - cut) + a,
                "collab_at": kept,
                "collab": v[len(at) - len(kept) :],
            }
        )
    if dropped:
        log.warning("collab: %d placeholders were in prompt starts cut to max_length (%d tokens)", dropped, max_length)
    return rows


class CollabCollator(PadCollator):
    """PadCollator's batch (right-padded), with every placeholder's (row, column) in collab_at and
    the CF vectors in the same order in collab_vectors."""

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(rows)
        at = [(i, pos) for i, r in enumerate(rows) for pos in r["collab_at"]]
        return {
            **batch,
            "collab_at": torch.tensor(at, dtype=torch.long).reshape(-1, 2),
            "collab_vectors": torch.cat([r["collab"] for r in rows]),
        }


def collab_loss(model, batch: dict[str, torch.Tensor]):
    """recpipe.model.train.answer_loss on hybrid prompts: summed cross-entropy over the labelled
    tokens, their count, and the output. The prompts' shared start is computed once (PrefixCache)
    up to the first placeholder of the batch; the rest runs from inputs_embeds."""
    targets, columns = labelled_columns(batch)
    ids, mask, at = batch["input_ids"], batch["attention_mask"], batch["collab_at"]
    limit = min(int(columns.min()), first_placeholder(at, ids.shape[1]))
    shared = shared_prefix_length(ids, limit) if len(ids) > 1 and not checkpointing(model) else 0
    cache = PrefixCache(model, ids[:1, :shared]).rows(len(ids))
    shift = torch.tensor([0, shared], device=at.device)
    embeds = collab_embeds(model, ids[:, shared:], at - shift, batch["collab_vectors"])
    out = model(
        inputs_embeds=embeds,
        attention_mask=mask,
        cache=cache,
        use_cache=cache is not None,
        logits_to_keep=columns - shared,
    )
    return summed_loss(out, targets[:, columns])


def vectors_digest(vectors: list[torch.Tensor]) -> str:
    """A hash of the CF vectors' values: part of what names a training run."""
    h = hashlib.sha256()
    for v in vectors:
        v = torch.as_tensor(v).detach().float().cpu().contiguous()
        h.update(str(tuple(v.shape)).encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def collab_task(
    train_path, valid_path, max_length: int, collab: CFVectors, params: CollabParams, step1_adapter=None
) -> TaskBuilder:
    """The task of training with collaborative tokens (recpipe.model.train.train's `task`): the
    hybrid prompt/answer rows of train_path and valid_path, their CF vectors (`collab` of each
    file's rows), the answer-only loss, and a new projector on the model.

    two_step: this is step 2, which starts from step 1's adapter folder `step1_adapter` and trains
    the projector alone; one_step (no step1_adapter): a fresh LoRA adapter trains with it.
    The adapter folder train() writes gets the projector's files (split_projector)."""
    two_step = params.recipe == "two_step"
    if two_step and step1_adapter is None:
        raise RecpipeError("collab.recipe two_step: step 2 starts from step 1's adapter folder, and none was given")
    if not two_step and step1_adapter is not None:
        raise RecpipeError("collab.recipe one_step trains a fresh adapter: no step 1 adapter to start from")
    if two_step and not (Path(step1_adapter) / "adapter_model.safetensors").is_file():
        raise RecpipeError(f"{step1_adapter}: no step 1 adapter (adapter_model.safetensors) to start step 2 from")

    def build(model, tokenizer) -> Task:
        shots, valid = read_parquet(train_path), read_parquet(valid_path)
        prompts, answers = shots["prompt"].to_list(), shots["answer"].to_list()
        train_vectors = collab(shots)
        rows = encode_collab(prompts, answers, train_vectors, tokenizer, max_length)
        valid_rows = encode_collab(
            valid["prompt"].to_list(), valid["answer"].to_list(), collab(valid), tokenizer, max_length
        )
        placeholders = sum(len(r["collab_at"]) for r in rows)
        if not placeholders:
            raise RecpipeError(
                f"{train_path}: no prompt has a collab placeholder ({PLACEHOLDER}): nothing for the projector to learn"
            )
        cf_dim = rows[0]["collab"].shape[1]
        add_projector(model, cf_dim, params.mid_times)
        log.info("collab: %s, %d placeholders in %d prompts, cf_dim %d", params.recipe, placeholders, len(rows), cf_dim)
        start = sha256_file(Path(step1_adapter) / "adapter_model.safetensors") if two_step else None
        return Task(
            rows=rows,
            valid=valid_rows,
            collate=CollabCollator(tokenizer.pad_token_id),
            loss=collab_loss,
            key=(prompts, answers, vectors_digest(train_vectors), params.model_dump(mode="json"), start),
            lora_extras={"modules_to_save": [PROJECTOR]},
            lora_from=step1_adapter,
            train_lora=not two_step,
            finish=split_projector,
        )

    return build


# Saving and loading


def split_projector(folder) -> None:
    """Move the projector out of a saved adapter folder's adapter (where peft's modules_to_save
    put it) into collab_projector.safetensors, with its sizes in collab_projector.json: the adapter
    left is a plain LoRA adapter."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    weights = load_file(folder / "adapter_model.safetensors")
    marker = f"{PROJECTOR}."
    mine = {k.split(marker, 1)[1]: v for k, v in weights.items() if marker in k}
    if not mine:
        raise RecpipeError(f"{folder}: the saved adapter holds no collab projector")
    rest = {k: v for k, v in weights.items() if marker not in k}
    save_file(rest, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    save_file(mine, folder / f"{PROJECTOR}.safetensors", metadata={"format": "pt"})
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    others = [m for m in config.get("modules_to_save") or [] if m != PROJECTOR]
    config["modules_to_save"] = others or None
    write_json(config, config_path)
    first, last = mine["mlp.0.weight"], mine["mlp.2.weight"]
    write_json(
        {"cf_dim": first.shape[1], "mid_dim": first.shape[0], "hidden_size": last.shape[0]},
        folder / f"{PROJECTOR}.json",
    )


def load_projector(folder) -> CollabProjector:
    """The projector saved in an adapter folder (split_projector)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        dims = json.loads((folder / f"{PROJECTOR}.json").read_text())
        weights = load_file(folder / f"{PROJECTOR}.safetensors")
    except (OSError, ValueError) as e:
        raise RecpipeError(
            f"{folder}: no readable collab projector ({PROJECTOR}.json and .safetensors; was this adapter trained with collab tokens?): {type(e).__name__}"
        ) from None
    projector = CollabProjector(dims["cf_dim"], dims["mid_dim"], dims["hidden_size"])
    projector.load_state_dict(weights)
    return projector


def attach_projector(model, folder):
    """The model (plain, merged or a PeftModel) with the projector saved in `folder` as its
    collab_projector, on its embeddings' device, in eval mode."""
    projector = load_projector(folder)
    embed = model.get_input_embeddings()
    if projector.dims["hidden_size"] != embed.embedding_dim:
        raise RecpipeError(
            f"{folder}: its collab projector outputs {projector.dims['hidden_size']} wide vectors, this model's embeddings are {embed.embedding_dim} wide"
        )
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.add_module(PROJECTOR, projector.to(embed.weight.device).eval())
    return model
