"""SASRec (Kang & McAuley 2018, self-attentive sequential recommendation) and its early-stopped
training on item sequences: every position's next item a target to rank (ranking, validated on
NDCG@10), or every position's next labelled interaction a like/dislike to tell, by binary
cross-entropy of the encoding before it against the item's embedding (labels, as CoLLM trains its
SASRec; validated on AUC)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from recpipe import RecpipeError, log
from recpipe.collab.training import (
    CHUNK,
    Cases,
    Fit,
    Labelled,
    Loop,
    columns,
    early_stopping,
    exclusion,
    left_pad,
    run_epoch,
    sample_negatives,
    target_columns,
    threads,
    validation_auc,
    validation_ndcg,
)
from recpipe.params.collab import SasrecParams


class SASRec(nn.Module):
    """Self-attentive sequential recommendation: item and learned position embeddings, causal
    pre-norm transformer blocks, and an item's score is the dot product of a position's hidden
    state with the item's embedding (input and output embeddings shared, as in the paper).

    Tokens: 0 pads, token j + 1 is items[j]. Sequences are left-padded, so the newest item always
    sits at the last position, and positions count back from it: a sequence's hidden states do
    not depend on how much padding comes before it (padding keys are masked in every block)."""

    def __init__(self, n_items: int, p: SasrecParams):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, p.hidden, padding_idx=0)
        self.pos = nn.Embedding(p.max_len, p.hidden)
        self.heads = p.heads
        self.drop = nn.Dropout(p.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                p.hidden, p.heads, dim_feedforward=p.hidden, dropout=p.dropout, batch_first=True, norm_first=True
            )
            for _ in range(p.blocks)
        )
        self.norm = nn.LayerNorm(p.hidden)  # pre-norm blocks leave the last output unnormalised
        # Small embeddings, as the paper's Xavier init: N(0, 1) rows times sqrt(hidden) would swamp the positions.
        nn.init.xavier_normal_(self.item.weight)
        nn.init.xavier_normal_(self.pos.weight)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states [batch, length, hidden] of left-padded token sequences [batch, length],
        length <= max_len."""
        length = seq.shape[1]
        if length > self.pos.num_embeddings:
            raise RecpipeError(
                f"sasrec: got sequences of {length} tokens, more than its max_len {self.pos.num_embeddings}"
            )
        real = seq > 0
        keep = real.unsqueeze(-1)
        x = self.item(seq) * math.sqrt(self.item.embedding_dim) + self.pos.weight[-length:]
        x = self.drop(x) * keep
        # A query sees itself and the real items before it: causal, padding keys masked. A padding
        # query sees only itself (so no row of the softmax is empty); its output is zeroed below.
        eye = torch.eye(length, dtype=torch.bool)
        allowed = (torch.ones(length, length, dtype=torch.bool).tril() & real.unsqueeze(1)) | eye
        blocked = (~allowed).repeat_interleave(self.heads, dim=0)  # [batch * heads, length, length]
        for block in self.blocks:
            x = block(x, src_mask=blocked) * keep  # padding zeroed again after each block, as in the paper
        return self.norm(x)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """The sequence encoding [batch, hidden]: the hidden state after each sequence's newest item."""
        return self(seq)[:, -1, :]

    def scores(self, seq: torch.Tensor) -> torch.Tensor:
        """Every item's score [batch, n_items] after each sequence (column j is token j + 1)."""
        return self.encode(seq) @ self.item.weight[1:].T


def sasrec_windows(tokens: list[list[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The training windows of token sequences: each sequence is cut from its end into windows of
    up to max_len + 1 tokens that overlap by one, so every token after a sequence's first is the
    target of exactly one position. Returns inputs and targets [windows, max_len] (left-padded,
    0 = padding) and each window's sequence index."""
    inputs, targets, owner = [], [], []
    for s, t in enumerate(tokens):
        for end in range(len(t), 1, -max_len):
            w = t[max(0, end - max_len - 1) : end]
            inputs.append(left_pad(w[:-1], max_len))
            targets.append(left_pad(w[1:], max_len))
            owner.append(s)
    return (
        torch.tensor(inputs, dtype=torch.long).view(-1, max_len),
        torch.tensor(targets, dtype=torch.long).view(-1, max_len),
        owner,
    )


def sasrec_loss(
    model: SASRec, h: torch.Tensor, targets: torch.Tensor, loss: str, negatives: torch.Tensor | None = None
) -> torch.Tensor:
    """The mean loss over every real (non-padding) position of hidden states h [batch, length,
    hidden] with next-item tokens `targets` [batch, length] (0 = padding: no loss). ce: softmax
    cross-entropy over every item; bce: the target against `negatives` (tokens, same shape)."""
    real = targets > 0
    if loss == "ce":
        return F.cross_entropy(h[real] @ model.item.weight[1:].T, targets[real] - 1)
    pos = (h * model.item(targets)).sum(-1)[real]
    neg = (h * model.item(negatives)).sum(-1)[real]
    return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(
        neg, torch.zeros_like(neg)
    )


def tokens_of(seq: list[int], col: dict[int, int], max_len: int) -> list[int]:
    """An item sequence as SASRec's left-padded tokens (item j of the item set is token j + 1)."""
    return left_pad([col[i] + 1 for i in seq], max_len)


def train_sasrec(
    train: list[list[int]],
    valid: Cases[list[int]],
    items: list[int],
    params: SasrecParams,
    seed: int,
    loop: Loop = early_stopping,
) -> tuple[SASRec, Fit]:
    """SASRec trained on item sequences `train` (one per user, in time order), every position's
    next item a target; early-stopped on the NDCG@10 of the `valid` cases: each ranks its target
    after its input sequence (whose items must be in `items`), its exclude items left out.
    Deterministic for a seed on one machine (CPU; the caller's global RNG and thread count are left
    as they were). `loop` runs the epochs (training.early_stopping's contract)."""
    p = params
    col = columns(train, items)
    n = len(items)
    tokens = [[col[i] + 1 for i in seq] for seq in train]
    inputs, targets, owner = sasrec_windows(tokens, p.max_len)
    if not len(owner):
        raise RecpipeError("sasrec: no training sequence has 2 or more items to train on")
    owner_t = torch.tensor(owner)
    seen = exclusion(tokens, n + 1)  # each user's training tokens, never their negatives (bce)
    seen[:, 0] = True
    columns(valid.inputs, items)  # every input item must have a token
    v_inputs = torch.tensor([tokens_of(s, col, p.max_len) for s in valid.inputs], dtype=torch.long).view(-1, p.max_len)
    v_target = torch.tensor(target_columns(valid, col), dtype=torch.long)
    v_exclude = exclusion([[col[i] for i in ex if i in col] for ex in valid.exclude], n)
    with torch.random.fork_rng(devices=[]), threads(p.threads):
        torch.manual_seed(seed)  # initial weights and dropout
        gen = torch.Generator().manual_seed(seed)  # batch order and negatives
        model = SASRec(n, p)
        opt = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(0.9, 0.98))  # the paper's beta2

        def batch_loss(batch: torch.Tensor) -> torch.Tensor:
            inp, tgt = inputs[batch], targets[batch]
            # Trim the padding every window of the batch has: positions count from the end.
            width = int((inp > 0).sum(1).max())
            inp, tgt = inp[:, -width:], tgt[:, -width:]
            neg = (
                sample_negatives(tuple(tgt.shape), n, seen[owner_t[batch]], gen, offset=1) if p.loss == "bce" else None
            )
            return sasrec_loss(model, model(inp), tgt, p.loss, neg)

        fit = loop(
            model,
            lambda: run_epoch(opt, torch.randperm(len(owner), generator=gen).split(p.batch_size), batch_loss),
            lambda: validation_ndcg(model.scores, v_inputs, v_target, v_exclude),
            p.epochs,
            p.patience,
            "sasrec",
        )
    log.info(
        "sasrec: %d windows of %d training sequences, %d items, loss %s",
        len(owner),
        sum(len(t) >= 2 for t in tokens),
        n,
        p.loss,
    )
    return model, fit


def train_sasrec_labels(
    train: list[list[int]],
    labels: list[list[int | None]],
    valid: Labelled[list[int]],
    items: list[int],
    params: SasrecParams,
    seed: int,
    loop: Loop = early_stopping,
) -> tuple[SASRec, Fit]:
    """SASRec trained on like/dislike labels: the logit of a user's interaction train[u][k] is the
    encoding of the user's interactions before it (in time order, the last max_len) dotted with the
    item's embedding, fitted by binary cross-entropy to labels[u][k] (1 or 0; None: not a target,
    e.g. unrated, but still history). The sequences are cut into train_sasrec's windows, each
    position's hidden state the encoding of the window's items up to it, so one pass reads every
    labelled interaction once. Early-stopped on the AUC of the `valid` cases (each encodes its
    input history, known items only, and scores its target; unknown ones score 0). The `loss`
    setting is not read. Deterministic for a seed, as train_sasrec."""
    p = params
    col = columns(train, items)
    n = len(items)
    if [len(s) for s in train] != [len(y) for y in labels]:
        raise RecpipeError("sasrec: one label (or None) per training interaction is needed")
    tokens = [[col[i] + 1 for i in seq] for seq in train]
    inputs, targets, owner = sasrec_windows(tokens, p.max_len)
    codes = [[0 if y is None else int(y) + 1 for y in ys] for ys in labels]  # 2 liked, 1 disliked, 0 none
    _, target_codes, _ = sasrec_windows(codes, p.max_len)
    keep = (target_codes > 0).any(1)  # windows with at least one labelled target
    inputs, targets, target_codes = inputs[keep], targets[keep], target_codes[keep]
    if not len(inputs):
        raise RecpipeError("sasrec: no labelled interaction has an earlier one to train on")
    at = valid.scorable(col)
    v_inputs = torch.tensor(
        [tokens_of([i for i in valid.inputs[c] if i in col][-p.max_len :], col, p.max_len) for c in at],
        dtype=torch.long,
    ).view(-1, p.max_len)
    v_items = torch.tensor([col[valid.targets[c]] + 1 for c in at], dtype=torch.long)
    if len(at) and bool((v_inputs[:, -1] == 0).any()):
        raise RecpipeError("sasrec: a validation case has no known history item: its input must be None")
    with torch.random.fork_rng(devices=[]), threads(p.threads):
        torch.manual_seed(seed)  # initial weights and dropout
        gen = torch.Generator().manual_seed(seed)  # batch order
        model = SASRec(n, p)
        opt = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(0.9, 0.98))

        def batch_loss(batch: torch.Tensor) -> torch.Tensor:
            inp, tgt, code = inputs[batch], targets[batch], target_codes[batch]
            width = int((inp > 0).sum(1).max())
            inp, tgt, code = inp[:, -width:], tgt[:, -width:], code[:, -width:]
            real = code > 0
            logits = (model(inp) * model.item(tgt)).sum(-1)[real]
            return F.binary_cross_entropy_with_logits(logits, (code[real] - 1).float())

        def validate() -> float:
            scores = [
                (model.encode(v_inputs[s : s + CHUNK]) * model.item(v_items[s : s + CHUNK])).sum(-1)
                for s in range(0, len(at), CHUNK)
            ]
            return validation_auc(valid.labels, at, torch.cat(scores) if scores else torch.zeros(0))

        fit = loop(
            model,
            lambda: run_epoch(opt, torch.randperm(len(inputs), generator=gen).split(p.batch_size), batch_loss),
            validate,
            p.epochs,
            p.patience,
            "sasrec",
            metric="auc",
        )
    log.info(
        "sasrec: %d windows of %d training sequences, %d labelled targets, %d items, loss bce of labels",
        len(inputs),
        len(train),
        int((target_codes > 0).sum()),
        n,
    )
    return model, fit
