"""The `evaluate` and `evaluate_base` stages: score the test split from the Yes/No logits of the
first answer token; AUC and more."""

from __future__ import annotations

import polars as pl
import torch

from recpipe import RecpipeError, log
from recpipe.io import atomic_dir, atomic_path, read_parquet, write_json, write_parquet
from recpipe.metrics import auc_metrics
from recpipe.model.collab import CFVectors, collab_embeds, encode_prompts
from recpipe.model.decoding import (
    PrefixCache,
    float32_logits,
    left_padded_positions,
    length_batches,
    model_inputs,
    output_layer,
    shared_prefix_length,
)
from recpipe.model.load import answer_token_ids
from recpipe.model.train import Validator
from recpipe.templates import load_template


@torch.no_grad()
def score(
    model,
    tokenizer,
    prompts: list[str],
    yes_id: int,
    no_id: int,
    batch_size: int,
    desc: str = "score",
    positions=None,
    collab_vectors: list[torch.Tensor] | None = None,
) -> list[float]:
    """P(yes) = softmax over the yes/no logits at the position right after each prompt.

    Every prompt starts with the same instruction: its keys and values are computed once and
    reused by every batch (PrefixCache). The rest of each prompt is sorted by length and
    left-padded (padding sits between the shared prefix and the prompt's own tokens, masked out)
    so each batch is as short as it can be and every prompt's last token sits in the last column.

    The two logits are computed in float32 whatever dtype the model runs in (float32_logits): from a
    bfloat16 output layer their difference moves in steps of 0.125 (logits between 16 and 32) and
    most prompts would tie.
    Batches depend only on the prompts and their order (length_batches), so the same model,
    prompts and batch size give the same scores.

    positions (recpipe.recsysllm.positions.Positions): add the prompts' intra positions (a
    token's depends only on the tokens before it, so the shared prefix's are the same in every row).

    collab_vectors (recpipe.model.collab): hybrid prompts, each with its CF vectors, float32
    [placeholders, cf_dim] in placeholder order; the model's projector puts them in the
    placeholders' places (inputs_embeds), and the shared prefix ends before the first placeholder."""
    if positions is not None and collab_vectors is not None:
        raise RecpipeError("intra positions and collab tokens cannot be scored together")
    model.eval()
    device = next(model.parameters()).device
    if collab_vectors is None:
        encoded = [tokenizer(p).input_ids for p in prompts]
    else:
        encoded, holes, collab_vectors = encode_prompts(tokenizer, prompts, collab_vectors)
    intra = positions.embedding if positions is not None else None
    intra_ids = [positions.run(e)[0] for e in encoded] if intra is not None else None
    shared = max(shared_prefix_length(encoded) - 1, 0) if len(encoded) > 1 else 0  # keep >= 1 own token
    if collab_vectors is not None:
        shared = min([shared, *(h[0] for h in holes if h)])
    prefix_intra = torch.tensor([intra_ids[0][:shared]]) if intra is not None else None
    prefix = PrefixCache(
        model,
        torch.tensor([encoded[0][:shared] if shared else []], dtype=torch.long, device=device),
        intra_ids=prefix_intra,
        intra=intra,
    )
    p_yes = [0.0] * len(encoded)
    pad = tokenizer.pad_token_id
    rows = [yes_id, no_id]
    head = output_layer(model, rows)
    for idx in length_batches([len(e) for e in encoded], batch_size, desc):
        rest = [encoded[i][shared:] for i in idx]
        n = max(len(r) for r in rest)
        ids = torch.full((len(idx), n), pad)
        own_intra = torch.zeros((len(idx), n), dtype=torch.long) if intra is not None else None
        mask = torch.zeros((len(idx), shared + n), dtype=torch.long)
        mask[:, :shared] = 1
        for row, (i, r) in enumerate(zip(idx, rest)):
            ids[row, n - len(r) :] = torch.tensor(r)
            if own_intra is not None:
                own_intra[row, n - len(r) :] = torch.tensor(intra_ids[i][shared:])
            mask[row, shared + n - len(r) :] = 1
        at = left_padded_positions(mask)[:, shared:]
        cache = prefix.rows(len(idx))
        if collab_vectors is None:
            inputs = model_inputs(model, ids.to(device), own_intra, intra)
        else:  # each row's placeholders, moved by its left padding and the shared prefix
            holes_at = [(row, n - len(encoded[i]) + pos) for row, i in enumerate(idx) for pos in holes[i]]
            inputs = {
                "inputs_embeds": collab_embeds(
                    model,
                    ids.to(device),
                    torch.tensor(holes_at, dtype=torch.long).reshape(-1, 2),
                    torch.cat([collab_vectors[i] for i in idx]),
                )
            }
        pair = float32_logits(
            model,
            rows,
            head=head,
            **inputs,
            attention_mask=mask.to(device),
            position_ids=at.to(device),
            cache=cache,
            use_cache=cache is not None,
        )[:, -1]
        for i, p in zip(idx, torch.softmax(pair, dim=-1)[:, 0].tolist()):
            p_yes[i] = p
    return p_yes


def score_frame(
    model,
    tokenizer,
    samples: pl.DataFrame,
    batch_size: int,
    template: str,
    positions=None,
    collab: CFVectors | None = None,
) -> list[float]:
    """score() on the samples' prompts; collab: samples -> their CF vectors, for hybrid prompts."""
    tpl = load_template(template, {})
    yes_id, no_id = answer_token_ids(tokenizer, tpl["answer_yes"], tpl["answer_no"])
    return score(
        model,
        tokenizer,
        samples["prompt"].to_list(),
        yes_id,
        no_id,
        batch_size,
        positions=positions,
        collab_vectors=collab(samples) if collab is not None else None,
    )


def valid_auc(template: str, batch_size: int, positions=None, collab: CFVectors | None = None) -> Validator:
    """The trainer's validator for TALLRec: AUC of P(yes) on the validation samples, which also
    picks the best step under train.eval_steps. positions: (model, tokenizer) -> Positions or None
    (recpipe.recsysllm.positions.EntityPositions), the intra positions to score with; collab:
    samples -> their CF vectors (recpipe.model.collab), for hybrid prompts."""

    def validate(model, tokenizer, valid: pl.DataFrame) -> dict:
        p_yes = score_frame(
            model,
            tokenizer,
            valid,
            batch_size,
            template,
            positions(model, tokenizer) if positions else None,
            collab,
        )
        return {"valid_auc": auc_metrics(valid["label"].cast(pl.Int64).to_list(), p_yes)["auc"]}

    return Validator(validate, "valid_auc")


def evaluate(
    samples_path,
    out_dir,
    metrics_path,
    roc_path,
    model,
    tokenizer,
    batch_size: int,
    template: str,
    positions=None,
    collab: CFVectors | None = None,
) -> dict:
    """Score the test samples and write predictions, metrics and ROC curve. collab: samples ->
    their CF vectors, for hybrid prompts (the model needs its projector: recpipe.model.collab's
    attach_projector)."""
    from sklearn.metrics import roc_curve

    test = read_parquet(samples_path, "instructions").filter(pl.col("split") == "test")
    p_yes = score_frame(model, tokenizer, test, batch_size, template, positions, collab)
    labels = test["label"].cast(pl.Int64).to_list()
    metrics = auc_metrics(labels, p_yes)
    fpr, tpr, _ = roc_curve(labels, p_yes, drop_intermediate=False)  # a point per distinct score
    with atomic_dir(out_dir) as tmp:
        write_parquet(
            test.select("sample_id", "user_id", "item_id", "label").with_columns(p_yes=pl.Series(p_yes)),
            tmp / "predictions.parquet",
        )
    with atomic_path(roc_path) as tmp:
        pl.DataFrame({"fpr": fpr, "tpr": tpr}).write_csv(tmp, float_precision=5)
    write_json(metrics, metrics_path)
    log.info("evaluate: %s", metrics)
    return metrics
