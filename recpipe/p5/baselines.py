"""Non-LLM baselines for the sequential and direct recommendation tasks, scored exactly as the LLM
is, so that a report can set them side by side: item popularity, SASRec (Kang & McAuley 2018,
self-attentive sequential recommendation) and BPR-MF (matrix factorization trained with Rendle et
al.'s Bayesian personalized ranking loss).

Data and split. The rated interactions (rating not null, as recpipe.p5.families.build reads them) cut
by the same leave-one-out split (recpipe.p5.families.leave_one_out): each user's last item is the test
target and every item before it is the user's history; the history's last item is the user's
validation item. SASRec and BPR-MF train as RecBole trains them:
- training data: each user's items before the validation item (never the validation or test item;
  a sampled negative is never one of the user's training items either).
- after every epoch the model ranks every user's validation item (full ranking, the training items
  left out, from the training items); the epoch with the best validation NDCG@10 is kept, and
  training stops once `patience` epochs bring no better one (or at `epochs`).
- the test ranking uses that best epoch's weights as they are, with no retraining: SASRec reads the
  user's whole history, the validation item included, and for both models the whole history is
  left out of the ranking. BPR-MF's user embedding has learned the training items only.
Popularity counts the whole histories (validation items included).
The metrics give each trained model's best_epoch, best_valid_ndcg@10 and epochs_run.

Scoring rules, the same for every method in the report, the LLM too:
- sequential: the whole item set is ranked, and the items already in the user's history are left
  out of the ranking (they are never recommended again). Every user with a history (2+ rated
  items) has one test case, as in the LLM's sequential samples. A dataset where users re-rate an
  item would make such a test target unrankable; ML-100K has no repeats.
- direct: exactly the given candidate list is ranked (recpipe.p5.families.build draws the negatives
  from the items the user never rated, so no history item is among them).
- equal scores go to the lower item_id, so every ranking is deterministic.
Metrics: recpipe.metrics.hit_and_ndcg, HR@1/5/10 and NDCG@1/5/10.

The item set is every item of the rated interactions, plus any item only named as a direct
candidate (the trained models then learn it only as a sampled negative; its popularity is 0)."""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import polars as pl
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from recpipe import RecpipeError, log
from recpipe.data.splits import loo_histories
from recpipe.metrics import hit_and_ndcg
from recpipe.params.p5 import BprmfParams, SasrecParams

KS = (1, 5, 10)
CHUNK = 512  # users scored at once: bounds the [users, items] score matrix on large datasets
VALID_K = 10  # early stopping watches NDCG at this k


def popularity_scores(train_sequences: Iterable[Iterable[int]]) -> dict[int, int]:
    """How often each item occurs in the training sequences (the users' histories)."""
    counts: Counter[int] = Counter()
    for seq in train_sequences:
        counts.update(seq)
    return dict(counts)


def topk(scores: torch.Tensor, items: list[int], k: int, exclude: list[Collection[int]]) -> list[list[int]]:
    """The k best items of each row of `scores` ([rows, len(items)], column j scores items[j]),
    best first, leaving out the row's `exclude` items. Equal scores go to the earlier column: with
    `items` sorted, as everywhere here, to the lower item_id."""
    if scores.dim() != 2 or scores.shape != (len(exclude), len(items)):
        raise RecpipeError(
            f"baselines: scores of shape {tuple(scores.shape)} for {len(exclude)} rows and {len(items)} items"
        )
    col = {item: j for j, item in enumerate(items)}
    rows = [r for r, ex in enumerate(exclude) for i in ex if i in col]
    cols = [col[i] for ex in exclude for i in ex if i in col]
    masked = scores.clone()
    if rows:
        masked[rows, cols] = -math.inf
    # An ascending stable sort of the negated scores keeps equal scores in column order.
    order = torch.sort(-masked, dim=1, stable=True).indices[:, : k + max((len(ex) for ex in exclude), default=0)]
    ranked = []
    for ex, row in zip(exclude, order.tolist()):
        ex = set(ex)
        ranked.append([items[j] for j in row if items[j] not in ex][:k])
    return ranked


def rank_candidates(scores: torch.Tensor, columns: Mapping[int, int], candidates: Iterable[int], k: int) -> list[int]:
    """The k best of `candidates` by their scores (scores[columns[item]] scores the item), best
    first; equal scores go to the lower item_id. Only candidates are ever returned."""
    cands = sorted(set(candidates))
    unknown = [c for c in cands if c not in columns]
    if unknown:
        raise RecpipeError(f"baselines: candidates {unknown[:5]} are not in the item set")
    return topk(scores[[columns[c] for c in cands]].unsqueeze(0), cands, k, [()])[0]


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
                f"baselines: SASRec got sequences of {length} tokens, more than its max_len {self.pos.num_embeddings}"
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

    def scores(self, seq: torch.Tensor) -> torch.Tensor:
        """Every item's score [batch, n_items] after each sequence (column j is token j + 1)."""
        return self(seq)[:, -1, :] @ self.item.weight[1:].T


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


@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _left_pad(tokens: list[int], length: int) -> list[int]:
    tokens = tokens[-length:]
    return [0] * (length - len(tokens)) + tokens


@dataclass
class Fit:
    """One early-stopped training run: the model holds the best epoch's weights."""

    best_epoch: int
    best_valid: float  # NDCG@VALID_K at best_epoch
    epochs_run: int
    losses: list[float] = field(default_factory=list)  # mean training loss of each epoch
    valid: list[float] = field(default_factory=list)  # validation NDCG@VALID_K after each epoch
    seconds: float = 0.0

    def metrics(self) -> dict:
        return {
            "best_epoch": self.best_epoch,
            f"best_valid_ndcg@{VALID_K}": round(self.best_valid, 5),
            "epochs_run": self.epochs_run,
        }


def early_stopping(
    model: nn.Module,
    train_epoch: Callable[[], float],
    validate: Callable[[], float],
    epochs: int,
    patience: int,
    name: str,
) -> Fit:
    """Train epoch after epoch, validating after each, until `patience` epochs in a row bring no
    better validation score than the best so far, or `epochs` have run; then load the best epoch's
    weights into the model (the earliest of equal best scores). train_epoch() trains one epoch and
    returns its mean loss; validate() scores the model (higher is better)."""
    start = time.perf_counter()
    fit = Fit(best_epoch=0, best_valid=-math.inf, epochs_run=0)
    best_state = copy.deepcopy(model.state_dict())
    bar = tqdm(range(1, epochs + 1), desc=name, unit="epoch", file=sys.stderr)
    for epoch in bar:
        model.train()
        fit.losses.append(float(train_epoch()))
        model.eval()
        with torch.no_grad():
            score = float(validate())
        fit.valid.append(score)
        fit.epochs_run = epoch
        if score > fit.best_valid:
            fit.best_epoch, fit.best_valid, best_state = epoch, score, copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{fit.losses[-1]:.4f}", valid=f"{score:.4f}", best=fit.best_epoch)
        if epoch - fit.best_epoch >= patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    fit.seconds = time.perf_counter() - start
    log.info(
        "%s: best validation NDCG@%d %.4f at epoch %d of %d run (patience %d, at most %d), %.1f s",
        name,
        VALID_K,
        fit.best_valid,
        fit.best_epoch,
        fit.epochs_run,
        patience,
        epochs,
        fit.seconds,
    )
    return fit


def ranks(scores: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """The 0-based rank of each row's target column among the columns not excluded, ties going to
    the lower column as in topk; an excluded target never ranks (rank = number of columns)."""
    scores = scores.masked_fill(exclude, -math.inf)
    t = scores.gather(1, target.unsqueeze(1))
    cols = torch.arange(scores.shape[1]).unsqueeze(0)
    rank = (scores > t).sum(1) + ((scores == t) & (cols < target.unsqueeze(1))).sum(1)
    return torch.where(exclude.gather(1, target.unsqueeze(1)).squeeze(1), scores.shape[1], rank)


def ndcg_at(rank: torch.Tensor, k: int = VALID_K) -> float:
    """Mean NDCG@k of one relevant item per case at these 0-based ranks."""
    gain = torch.where(rank < k, 1 / torch.log2(rank.double() + 2), torch.zeros((), dtype=torch.float64))
    return float(gain.mean())


def _exclusion(histories: list[list[int]], n: int) -> torch.Tensor:
    """[len(histories), n] True at each row's columns."""
    mask = torch.zeros(len(histories), n, dtype=torch.bool)
    rows = [r for r, h in enumerate(histories) for _ in h]
    mask[rows, [c for h in histories for c in h]] = True
    return mask


def _sample_negatives(
    shape: tuple[int, ...], n: int, seen: torch.Tensor, gen: torch.Generator, offset: int = 0
) -> torch.Tensor:
    """Uniform items in [offset, offset + n), redrawn while they are among the row's seen ones
    (seen: [rows, offset + n] bool, one row per leading index of shape); a row that saw every item
    keeps whatever is drawn."""
    neg = torch.randint(offset, offset + n, shape, generator=gen)
    can_draw = seen[:, offset:].sum(1) < n
    can_draw = can_draw.view(-1, *([1] * (len(shape) - 1)))
    redraw = seen.gather(1, neg.view(seen.shape[0], -1)).view(shape) & can_draw
    while redraw.any():  # rejection sampling
        neg[redraw] = torch.randint(offset, offset + n, (int(redraw.sum()),), generator=gen)
        redraw = seen.gather(1, neg.view(seen.shape[0], -1)).view(shape) & can_draw
    return neg


def sasrec_windows(tokens: list[list[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The training windows of token sequences: each sequence is cut from its end into windows of
    up to max_len + 1 tokens that overlap by one, so every token after a sequence's first is the
    target of exactly one position. Returns inputs and targets [windows, max_len] (left-padded,
    0 = padding) and each window's sequence index."""
    inputs, targets, owner = [], [], []
    for s, t in enumerate(tokens):
        for end in range(len(t), 1, -max_len):
            w = t[max(0, end - max_len - 1) : end]
            inputs.append(_left_pad(w[:-1], max_len))
            targets.append(_left_pad(w[1:], max_len))
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


def _columns(train: list[list[int]], items: list[int]) -> dict[int, int]:
    """Each item's column in the score matrix; every item of the sequences must be one of them."""
    col = {item: j for j, item in enumerate(items)}
    unknown = sorted({i for seq in train for i in seq} - set(col))
    if unknown:
        raise RecpipeError(f"baselines: the sequences name items {unknown[:5]} that are not in the item set")
    return col


def train_sasrec(
    train: list[list[int]], valid_target: list[int | None], items: list[int], params: SasrecParams, seed: int
) -> tuple[SASRec, Fit]:
    """SASRec trained on item sequences `train` (one per user, the items before the user's
    validation item), every position's next item a target; early-stopped on the validation
    NDCG@10 of ranking valid_target[u] (None: the user has no validation case) after train[u],
    train[u] left out of the ranking. Deterministic for a seed on one machine (CPU; the caller's
    global RNG is left as it was)."""
    p = params
    col = _columns(train, items)
    n = len(items)
    tokens = [[col[i] + 1 for i in seq] for seq in train]
    inputs, targets, owner = sasrec_windows(tokens, p.max_len)
    if not len(owner):
        raise RecpipeError("baselines: no training sequence has 2 or more items to train SASRec on")
    owner_t = torch.tensor(owner)
    seen = _exclusion(tokens, n + 1)  # each user's training tokens, never their negatives (bce)
    seen[:, 0] = True
    cases = [u for u, v in enumerate(valid_target) if v is not None and tokens[u]]
    v_inputs = torch.tensor([_left_pad(tokens[u], p.max_len) for u in cases], dtype=torch.long).view(-1, p.max_len)
    v_target = torch.tensor([col[valid_target[u]] for u in cases], dtype=torch.long)
    v_exclude = _exclusion([[t - 1 for t in tokens[u]] for u in cases], n)
    with torch.random.fork_rng(devices=[]), _threads(p.threads):
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
                _sample_negatives(tuple(tgt.shape), n, seen[owner_t[batch]], gen, offset=1) if p.loss == "bce" else None
            )
            return sasrec_loss(model, model(inp), tgt, p.loss, neg)

        fit = early_stopping(
            model,
            lambda: _epoch(opt, torch.randperm(len(owner), generator=gen).split(p.batch_size), batch_loss),
            lambda: _validation_ndcg(model.scores, v_inputs, v_target, v_exclude),
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


def _epoch(opt, batches, batch_loss) -> float:
    """One pass of optimizer steps over `batches`; the mean loss."""
    total, steps = 0.0, 0
    for batch in batches:
        loss = batch_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total, steps = total + loss.item(), steps + 1
    return total / steps


def _validation_ndcg(scores_of, inputs: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor) -> float:
    """NDCG@10 of the validation cases (0 when there are none), CHUNK cases at a time."""
    if not len(target):
        return 0.0
    rank = torch.cat(
        [
            ranks(scores_of(inputs[s : s + CHUNK]), target[s : s + CHUNK], exclude[s : s + CHUNK])
            for s in range(0, len(target), CHUNK)
        ]
    )
    return ndcg_at(rank)


def train_bprmf(
    train: list[list[int]], valid_target: list[int | None], items: list[int], params: BprmfParams, seed: int
) -> tuple[BPRMF, Fit]:
    """BPR-MF trained on each user's (row u of `train`) items: every epoch, every (user, item)
    once, against one sampled item the user never had in training; early-stopped on the
    validation NDCG@10 of ranking valid_target[u] (None: no validation case) with train[u] left
    out. User u is embedding row u. Deterministic for a seed (the caller's global RNG is kept)."""
    p = params
    col = _columns(train, items)
    n = len(items)
    cols = [[col[i] for i in seq] for seq in train]
    pair_users = torch.tensor([u for u, c in enumerate(cols) for _ in c], dtype=torch.long)
    pair_items = torch.tensor([i for c in cols for i in c], dtype=torch.long)
    if not len(pair_users):
        raise RecpipeError("baselines: no training interaction to train BPR-MF on")
    seen = _exclusion(cols, n)
    cases = [u for u, v in enumerate(valid_target) if v is not None and cols[u]]
    v_users = torch.tensor(cases, dtype=torch.long)
    v_target = torch.tensor([col[valid_target[u]] for u in cases], dtype=torch.long)
    v_exclude = seen[v_users]
    with torch.random.fork_rng(devices=[]), _threads(p.threads):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = BPRMF(len(train), n, p.dim)
        opt = torch.optim.Adam(model.parameters(), lr=p.lr)

        def batch_loss(batch: torch.Tensor) -> torch.Tensor:
            u, i = pair_users[batch], pair_items[batch]
            j = _sample_negatives((len(batch),), n, seen[u], gen)
            eu, ei, ej = model.user(u), model.item(i), model.item(j)
            loss = -F.logsigmoid((eu * ei).sum(-1) - (eu * ej).sum(-1)).mean()
            if p.reg:
                loss = loss + p.reg * (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()) / len(batch)
            return loss

        fit = early_stopping(
            model,
            lambda: _epoch(opt, torch.randperm(len(pair_users), generator=gen).split(p.batch_size), batch_loss),
            lambda: _validation_ndcg(model.scores, v_users, v_target, v_exclude),
            p.epochs,
            p.patience,
            "bprmf",
        )
    return model, fit


def _direct_cases(direct_cases: pl.DataFrame | None, target: dict[int, int]) -> pl.DataFrame | None:
    """The direct test cases that ask for an item, one per (user, target), checked against the split."""
    if direct_cases is None or direct_cases.is_empty():
        return None
    missing = {"user_id", "item_id", "candidates"} - set(direct_cases.columns)
    if missing:
        raise RecpipeError(f"baselines: the direct cases lack the columns {sorted(missing)}")
    cases = direct_cases
    # recpipe.p5.families.build's output can be passed as it is: its direct test rows that ask for an item.
    for column, value in (("family", "direct"), ("kind", "item"), ("split", "test")):
        if column in cases.columns:
            cases = cases.filter(pl.col(column) == value)
    # A test case is written with a seen and with an unseen template (same user, target and
    # candidates): it is scored once.
    cases = cases.unique(["user_id", "item_id"], keep="first", maintain_order=True).select(
        "user_id", "item_id", "candidates"
    )
    for user, item, candidates in cases.iter_rows():
        if user not in target:
            raise RecpipeError(
                f"baselines: direct case of user {user}, who has no test item in the leave-one-out split of these interactions"
            )
        if item != target[user]:
            raise RecpipeError(
                f"baselines: direct case of user {user} targets item {item}, but the user's test item is {target[user]}: the cases come from another split"
            )
        if item not in (candidates or []):
            raise RecpipeError(
                f"baselines: direct case of user {user}: the target item {item} is not among its candidates"
            )
    return cases if cases.height else None


def _evaluate(
    score: Callable[[list[int]], torch.Tensor],
    items: list[int],
    history: dict[int, list[int]],
    target: dict[int, int],
    direct: pl.DataFrame | None,
    cases: Collection[int] | None = None,
) -> tuple[dict, list[tuple]]:
    """HR/NDCG of one method, and its top-k for every case it was scored on as (family, user_id,
    item_id, ranked) rows; `score(users)` gives every item's score [len(users), len(items)]."""
    k = max(KS)
    col = {item: j for j, item in enumerate(items)}
    users = list(target)
    ranked: list[list[int]] = []
    for start in range(0, len(users), CHUNK):
        chunk = users[start : start + CHUNK]
        ranked += topk(score(chunk), items, k, [history[u] for u in chunk])
    out = {"sequential": hit_and_ndcg(ranked, [target[u] for u in users], KS)}
    keep = [i for i, u in enumerate(users) if cases is None or u in cases]
    if cases is not None:  # the LLM's sampled test users: its rows compare on exactly these
        out["sequential_all_users"] = out["sequential"]
        out["sequential"] = hit_and_ndcg([ranked[i] for i in keep], [target[users[i]] for i in keep], KS)
    rows_out = [("sequential", users[i], target[users[i]], ranked[i]) for i in keep]
    if direct is not None:
        ranked = []
        for start in range(0, direct.height, CHUNK):
            rows = direct.slice(start, CHUNK)
            scores = score(rows["user_id"].to_list())
            ranked += [
                rank_candidates(scores[r], col, cands, k) for r, cands in enumerate(rows["candidates"].to_list())
            ]
        out["direct"] = hit_and_ndcg(ranked, direct["item_id"].to_list(), KS)
        rows_out += [
            ("direct", u, i, r) for u, i, r in zip(direct["user_id"].to_list(), direct["item_id"].to_list(), ranked)
        ]
    return out, rows_out


def baselines(
    interactions: pl.DataFrame,
    direct_cases: pl.DataFrame | None,
    params: SasrecParams,
    seed: int,
    sequential_users: Collection[int] | None = None,
    bprmf: BprmfParams | None = None,
) -> tuple[dict, pl.DataFrame]:
    """Popularity, SASRec and BPR-MF scored on the leave-one-out test cases (see the module docstring).

    Returns the metrics, {"popularity": {"sequential": {hr@1, ndcg@1, ...}, "direct": {...}},
    "sasrec": {..., "best_epoch", "best_valid_ndcg@10", "epochs_run"}, "bprmf": {...}, "users":
    users with a test case, "items": items ranked} ("direct" and "direct_cases", their number, only
    when direct cases are given), and each method's top-k for every case it was scored on (method,
    family, user_id, item_id, ranked), for paired comparisons with the LLM on the same cases.
    `params`: SASRec's settings (p5.sasrec); `bprmf`: BPR-MF's (p5.bprmf; None: the defaults).
    sequential_users: score "sequential" on these users' test cases only (the ones the LLM was
    asked), with every user's result under "sequential_all_users"."""
    p, pb = params, bprmf if bprmf is not None else BprmfParams()
    history, target = loo_histories(interactions)
    if not any(len(h) >= 2 for h in history.values()):
        raise RecpipeError(
            f"baselines: too few interactions: no user has 3 or more rated items ({len(target)} users have 2), "
            "so no sequence is left to train on once the test item is held out"
        )
    direct = _direct_cases(direct_cases, target)
    item_set = set(interactions.filter(pl.col("rating").is_not_null())["item_id"].to_list())
    if direct is not None:
        item_set |= {c for cands in direct["candidates"].to_list() for c in cands}
    items = sorted(item_set)  # sorted: column order is the tie-break (lower item_id first)
    col = {item: j for j, item in enumerate(items)}
    log.info(
        "baselines: %d users with a test case, %d items%s",
        len(target),
        len(items),
        f", {direct.height} direct cases" if direct is not None else "",
    )

    counts = popularity_scores(history.values())
    popular = torch.zeros(len(items), dtype=torch.float64)
    popular[[col[i] for i in counts]] = torch.tensor(list(counts.values()), dtype=torch.float64)
    result, cases = {}, []
    result["popularity"], rows = _evaluate(
        lambda users: popular.expand(len(users), -1), items, history, target, direct, sequential_users
    )
    cases += [("popularity", *row) for row in rows]

    # Train on the items before each user's validation item (the history's last), validate on it.
    users = list(target)
    row = {u: r for r, u in enumerate(users)}
    train = [history[u][:-1] for u in users]
    valid = [history[u][-1] if len(history[u]) >= 2 else None for u in users]

    model, fit = train_sasrec(train, valid, items, p, seed)

    @torch.no_grad()
    def sasrec_scores(chunk: list[int]) -> torch.Tensor:
        # The test input: the whole history, the validation item included.
        seqs = torch.tensor(
            [_left_pad([col[i] + 1 for i in history[u]], p.max_len) for u in chunk], dtype=torch.long
        ).view(-1, p.max_len)
        return model.scores(seqs)

    with _threads(p.threads):
        result["sasrec"], rows = _evaluate(sasrec_scores, items, history, target, direct, sequential_users)
    result["sasrec"] |= fit.metrics()
    cases += [("sasrec", *row) for row in rows]

    mf, mf_fit = train_bprmf(train, valid, items, pb, seed)

    @torch.no_grad()
    def bprmf_scores(chunk: list[int]) -> torch.Tensor:
        return mf.scores(torch.tensor([row[u] for u in chunk], dtype=torch.long))

    with _threads(pb.threads):
        result["bprmf"], rows = _evaluate(bprmf_scores, items, history, target, direct, sequential_users)
    result["bprmf"] |= mf_fit.metrics()
    cases += [("bprmf", *row) for row in rows]

    result["users"], result["items"] = len(target), len(items)
    if sequential_users is not None:
        result["sequential_cases"] = len(set(sequential_users) & set(target))
    if direct is not None:
        result["direct_cases"] = direct.height
    every = "sequential_all_users" if sequential_users is not None else "sequential"
    for name in ("popularity", "sasrec", "bprmf"):
        r = result[name]
        log.info(
            "baselines: %s: all users' hr@10 %.4f ndcg@10 %.4f%s",
            name,
            r[every]["hr@10"],
            r[every]["ndcg@10"],
            f" (epoch {r['best_epoch']} of {r['epochs_run']}, valid ndcg@10 {r[f'best_valid_ndcg@{VALID_K}']:.4f})"
            if "best_epoch" in r
            else "",
        )
    schema = {
        "method": pl.String,
        "family": pl.String,
        "user_id": pl.Int64,
        "item_id": pl.Int64,
        "ranked": pl.List(pl.Int64),
    }
    return result, pl.DataFrame(cases, schema=schema, orient="row")
