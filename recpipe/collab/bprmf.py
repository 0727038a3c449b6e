"""BPR-MF: matrix factorization trained with Rendle et al.'s Bayesian personalized ranking loss,
early-stopped on a validation ranking; or the same model trained as CoLLM trains its MF, with
binary cross-entropy of like/dislike labels, early-stopped on a validation AUC."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from recpipe import RecpipeError
from recpipe.collab.training import (
    Cases,
    Fit,
    Labelled,
    Loop,
    columns,
    early_stopping,
    exclusion,
    run_epoch,
    sample_negatives,
    target_columns,
    threads,
    validation_auc,
    validation_ndcg,
)
from recpipe.params.collab import BprmfParams


class BPRMF(nn.Module):
    """Matrix factorization: an item's score for a user is the dot product of their embeddings."""

    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.xavier_normal_(self.user.weight)
        nn.init.xavier_normal_(self.item.weight)

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        """Every item's score [len(users), n_items] (column j is items[j]) for user indices."""
        return self.user(users) @ self.item.weight.T


def train_bprmf(
    train: list[list[int]],
    valid: Cases[int],
    items: list[int],
    params: BprmfParams,
    seed: int,
    loop: Loop = early_stopping,
) -> tuple[BPRMF, Fit]:
    """BPR-MF trained on each user's (row u of `train`) items: every epoch, every (user, item)
    once, against one sampled item the user never had in training; early-stopped on the NDCG@10 of
    the `valid` cases, each a user row ranking its target with its exclude items left out. User u
    is embedding row u. Deterministic for a seed (the caller's global RNG and thread count are
    kept). `loop` runs the epochs (training.early_stopping's contract)."""
    p = params
    col = columns(train, items)
    n = len(items)
    cols = [[col[i] for i in seq] for seq in train]
    pair_users = torch.tensor([u for u, c in enumerate(cols) for _ in c], dtype=torch.long)
    pair_items = torch.tensor([i for c in cols for i in c], dtype=torch.long)
    if not len(pair_users):
        raise RecpipeError("bprmf: no training interaction to train on")
    seen = exclusion(cols, n)
    bad = sorted({u for u in valid.inputs if not 0 <= u < len(train)})
    if bad:
        raise RecpipeError(f"bprmf: validation cases name user rows {bad[:5]}, but {len(train)} users train")
    v_users = torch.tensor(valid.inputs, dtype=torch.long)
    v_target = torch.tensor(target_columns(valid, col), dtype=torch.long)
    v_exclude = exclusion([[col[i] for i in ex if i in col] for ex in valid.exclude], n)
    with torch.random.fork_rng(devices=[]), threads(p.threads):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = BPRMF(len(train), n, p.dim)
        opt = torch.optim.Adam(model.parameters(), lr=p.lr)

        def batch_loss(batch: torch.Tensor) -> torch.Tensor:
            u, i = pair_users[batch], pair_items[batch]
            j = sample_negatives((len(batch),), n, seen[u], gen)
            eu, ei, ej = model.user(u), model.item(i), model.item(j)
            loss = -F.logsigmoid((eu * ei).sum(-1) - (eu * ej).sum(-1)).mean()
            if p.reg:
                loss = loss + p.reg * (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()) / len(batch)
            return loss

        fit = loop(
            model,
            lambda: run_epoch(opt, torch.randperm(len(pair_users), generator=gen).split(p.batch_size), batch_loss),
            lambda: validation_ndcg(model.scores, v_users, v_target, v_exclude),
            p.epochs,
            p.patience,
            "bprmf",
        )
    return model, fit


def train_mf_labels(
    train: list[list[int]],
    labels: list[list[int | None]],
    valid: Labelled[int],
    items: list[int],
    params: BprmfParams,
    seed: int,
    loop: Loop = early_stopping,
) -> tuple[BPRMF, Fit]:
    """The BPRMF model trained as CoLLM's MF: the logit of a (user, item) is the dot product of
    their embeddings (no bias terms, as CoLLM's), and binary cross-entropy fits it to the label of
    each labelled interaction (labels[u][k] is 1 or 0 for train[u][k]; None: not trained on), every
    one once an epoch; `reg` is an L2 penalty on the batch's user and item embeddings. Early-stopped
    on the AUC of the `valid` cases (a user row scoring its target, unknown ones scoring 0). User u
    is embedding row u. Deterministic for a seed, as train_bprmf."""
    p = params
    col = columns(train, items)
    rows = [(u, col[i], y) for u, (seq, ys) in enumerate(zip(train, labels)) for i, y in zip(seq, ys) if y is not None]
    if not rows:
        raise RecpipeError("mf: no labelled training interaction to train on")
    pair_users, pair_items, pair_labels = (torch.tensor(x) for x in zip(*rows))
    pair_labels = pair_labels.float()
    at = valid.scorable(col)
    bad = sorted({valid.inputs[c] for c in at if not 0 <= valid.inputs[c] < len(train)})
    if bad:
        raise RecpipeError(f"mf: validation cases name user rows {bad[:5]}, but {len(train)} users train")
    v_users = torch.tensor([valid.inputs[c] for c in at], dtype=torch.long)
    v_items = torch.tensor([col[valid.targets[c]] for c in at], dtype=torch.long)
    with torch.random.fork_rng(devices=[]), threads(p.threads):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = BPRMF(len(train), len(items), p.dim)
        opt = torch.optim.Adam(model.parameters(), lr=p.lr)

        def batch_loss(batch: torch.Tensor) -> torch.Tensor:
            eu, ei = model.user(pair_users[batch]), model.item(pair_items[batch])
            loss = F.binary_cross_entropy_with_logits((eu * ei).sum(-1), pair_labels[batch])
            if p.reg:
                loss = loss + p.reg * (eu.pow(2).sum() + ei.pow(2).sum()) / len(batch)
            return loss

        fit = loop(
            model,
            lambda: run_epoch(opt, torch.randperm(len(pair_users), generator=gen).split(p.batch_size), batch_loss),
            lambda: validation_auc(valid.labels, at, (model.user(v_users) * model.item(v_items)).sum(-1)),
            p.epochs,
            p.patience,
            "mf",
            metric="auc",
        )
    return model, fit
