"""Non-LLM baselines for the sequential and direct recommendation tasks, scored exactly as the LLM
is, so that a report can set them side by side: item popularity, and a small SASRec (Kang &
McAuley 2018, self-attentive sequential recommendation).

Data and split. The rated interactions (rating not null, as recpipe.p5.families.build reads them) cut
by the same leave-one-out split (recpipe.p5.families.leave_one_out): each user's last item is the test
target and every item before it (the train and valid positions) is the user's history. Both
baselines learn from these histories only: popularity counts them, and SASRec trains on them, that
is on each user's sequence with the test item removed and the valid item kept. That is the
standard way to train for the final test ranking; SASRec here trains a fixed number of epochs with
no early stopping, so nothing needs the valid position held out.

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
candidate (SASRec then learns it only as a sampled negative; its popularity is 0)."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping

import polars as pl
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from recpipe import RecpipeError, log
from recpipe.data.splits import loo_histories
from recpipe.metrics import hit_and_ndcg
from recpipe.params import SasrecParams

KS = (1, 5, 10)
CHUNK = 512  # users scored at once: bounds the [users, items] score matrix on large datasets


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
        raise RecpipeError(f"baselines: scores of shape {tuple(scores.shape)} for {len(exclude)} rows and {len(items)} items")
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
    pre-norm transformer blocks, and an item's score is the dot product of the last hidden state
    with the item's embedding (input and output embeddings shared, as in the paper).

    Tokens: 0 pads, token j + 1 is items[j]. Sequences are left-padded to max_len, so the newest
    item always sits at the last position."""

    def __init__(self, n_items: int, p: SasrecParams):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, p.hidden, padding_idx=0)
        self.pos = nn.Embedding(p.max_len, p.hidden)
        self.drop = nn.Dropout(p.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(p.hidden, p.heads, dim_feedforward=p.hidden, dropout=p.dropout, batch_first=True, norm_first=True)
            for _ in range(p.blocks)
        )
        self.norm = nn.LayerNorm(p.hidden)  # pre-norm blocks leave the last output unnormalised
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(p.max_len), persistent=False)
        # Small embeddings, as the paper's Xavier init: N(0, 1) rows times sqrt(hidden) would swamp the positions.
        nn.init.xavier_normal_(self.item.weight)
        nn.init.xavier_normal_(self.pos.weight)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states [batch, max_len, hidden] of left-padded token sequences [batch, max_len]."""
        keep = (seq > 0).unsqueeze(-1)
        x = self.item(seq) * math.sqrt(self.item.embedding_dim) + self.pos.weight
        x = self.drop(x) * keep
        for block in self.blocks:
            # Padding is zeroed again after each block, as in the paper; the causal mask keeps every
            # position from seeing later ones.
            x = block(x, src_mask=self.causal, is_causal=True) * keep
        return self.norm(x)

    def scores(self, seq: torch.Tensor) -> torch.Tensor:
        """Every item's score [batch, n_items] after each sequence (column j is token j + 1)."""
        return self(seq)[:, -1, :] @ self.item.weight[1:].T


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


def train_sasrec(sequences: list[list[int]], items: list[int], params: SasrecParams, seed: int) -> SASRec:
    """SASRec trained on item sequences (the users' histories): at every position the next item is
    the positive, and one sampled item the user never had is the negative (binary cross-entropy,
    Adam). Each user's last max_len + 1 items make one training sequence per epoch, as in the
    paper. Deterministic for a seed on one machine (CPU; the caller's global RNG is left as it was)."""
    p = params
    col = {item: j for j, item in enumerate(items)}
    unknown = sorted({i for seq in sequences for i in seq} - set(col))
    if unknown:
        raise RecpipeError(f"baselines: the sequences name items {unknown[:5]} that are not in the item set")
    tokens = [[col[i] + 1 for i in seq] for seq in sequences]
    tokens = [t for t in tokens if len(t) >= 2]  # one item has no next item to learn
    if not tokens:
        raise RecpipeError("baselines: no sequence has 2 or more items to train SASRec on")
    window = [t[-(p.max_len + 1) :] for t in tokens]
    inputs = torch.tensor([_left_pad(w[:-1], p.max_len) for w in window])
    positives = torch.tensor([_left_pad(w[1:], p.max_len) for w in window])
    # The items each user ever had, never drawn as that user's negatives (the whole history, not
    # only the window); a user who had every item keeps whatever is drawn.
    seen_items = [torch.tensor(sorted(set(t))) for t in tokens]
    has_unseen = torch.tensor([len(s) < len(items) for s in seen_items])
    n, users = len(items), len(tokens)
    with torch.random.fork_rng(devices=[]), _threads(p.threads):
        torch.manual_seed(seed)  # initial weights and dropout
        gen = torch.Generator().manual_seed(seed)  # batch order and negatives
        model = SASRec(n, p)
        opt = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(0.9, 0.98))  # the paper's beta2
        model.train()
        start, loss_sum, steps = time.perf_counter(), 0.0, 0
        bar = tqdm(range(p.epochs), desc="sasrec", unit="epoch", file=sys.stderr)
        for _ in bar:
            loss_sum, steps = 0.0, 0
            for batch in torch.randperm(users, generator=gen).split(p.batch_size):
                inp, pos = inputs[batch], positives[batch]
                seen = torch.zeros(len(batch), n + 1, dtype=torch.bool)
                rows = torch.cat([torch.full((len(seen_items[u]),), r) for r, u in enumerate(batch.tolist())])
                seen[rows, torch.cat([seen_items[u] for u in batch.tolist()])] = True
                neg = torch.randint(1, n + 1, pos.shape, generator=gen)
                can_draw = has_unseen[batch].unsqueeze(1)
                redraw = seen.gather(1, neg) & can_draw
                while redraw.any():  # rejection sampling: redraw the negatives the user had
                    neg[redraw] = torch.randint(1, n + 1, (int(redraw.sum()),), generator=gen)
                    redraw = seen.gather(1, neg) & can_draw
                h = model(inp)
                real = pos > 0
                pos_logits = (h * model.item(pos)).sum(-1)[real]
                neg_logits = (h * model.item(neg)).sum(-1)[real]
                loss = F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits)) + F.binary_cross_entropy_with_logits(
                    neg_logits, torch.zeros_like(neg_logits)
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_sum, steps = loss_sum + loss.item(), steps + 1
            bar.set_postfix(loss=f"{loss_sum / steps:.4f}")
        bar.close()
    log.info("sasrec: %d epochs on %d sequences of %d items, final loss %.4f, %.1f s", p.epochs, users, n, loss_sum / steps, time.perf_counter() - start)
    return model.eval()


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
    cases = cases.unique(["user_id", "item_id"], keep="first", maintain_order=True).select("user_id", "item_id", "candidates")
    for user, item, candidates in cases.iter_rows():
        if user not in target:
            raise RecpipeError(f"baselines: direct case of user {user}, who has no test item in the leave-one-out split of these interactions")
        if item != target[user]:
            raise RecpipeError(f"baselines: direct case of user {user} targets item {item}, but the user's test item is {target[user]}: the cases come from another split")
        if item not in (candidates or []):
            raise RecpipeError(f"baselines: direct case of user {user}: the target item {item} is not among its candidates")
    return cases if cases.height else None


def _evaluate(score: Callable[[list[int]], torch.Tensor], items: list[int], history: dict[int, list[int]], target: dict[int, int], direct: pl.DataFrame | None, cases: Collection[int] | None = None) -> tuple[dict, list[tuple]]:
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
            ranked += [rank_candidates(scores[r], col, cands, k) for r, cands in enumerate(rows["candidates"].to_list())]
        out["direct"] = hit_and_ndcg(ranked, direct["item_id"].to_list(), KS)
        rows_out += [("direct", u, i, r) for u, i, r in zip(direct["user_id"].to_list(), direct["item_id"].to_list(), ranked)]
    return out, rows_out


def baselines(interactions: pl.DataFrame, direct_cases: pl.DataFrame | None, params: SasrecParams, seed: int, sequential_users: Collection[int] | None = None) -> tuple[dict, pl.DataFrame]:
    """Popularity and SASRec scored on the leave-one-out test cases (see the module docstring).

    Returns the metrics, {"popularity": {"sequential": {hr@1, ndcg@1, ...}, "direct": {...}},
    "sasrec": {...}, "users": users with a test case, "items": items ranked} ("direct" and
    "direct_cases", their number, only when direct cases are given), and each method's top-k for
    every case it was scored on (method, family, user_id, item_id, ranked), for paired comparisons
    with the LLM on the same cases. `params`: SASRec's settings (p5.sasrec). sequential_users: score "sequential" on these users' test cases only (the ones the LLM
    was asked), with every user's result under "sequential_all_users"."""
    p = params
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
    log.info("baselines: %d users with a test case, %d items%s", len(target), len(items), f", {direct.height} direct cases" if direct is not None else "")

    counts = popularity_scores(history.values())
    popular = torch.zeros(len(items), dtype=torch.float64)
    popular[[col[i] for i in counts]] = torch.tensor(list(counts.values()), dtype=torch.float64)
    result, cases = {}, []
    result["popularity"], rows = _evaluate(lambda users: popular.expand(len(users), -1), items, history, target, direct, sequential_users)
    cases += [("popularity", *row) for row in rows]

    model = train_sasrec(list(history.values()), items, p, seed)

    @torch.no_grad()
    def sasrec_scores(users: list[int]) -> torch.Tensor:
        seqs = torch.tensor([_left_pad([col[i] + 1 for i in history[u]], p.max_len) for u in users])
        return model.scores(seqs)

    with _threads(p.threads):
        result["sasrec"], rows = _evaluate(sasrec_scores, items, history, target, direct, sequential_users)
    cases += [("sasrec", *row) for row in rows]
    result["users"], result["items"] = len(target), len(items)
    if sequential_users is not None:
        result["sequential_cases"] = len(set(sequential_users) & set(target))
    if direct is not None:
        result["direct_cases"] = direct.height
    log.info("baselines: sequential hr@10 popularity %.4f, sasrec %.4f", result["popularity"]["sequential"]["hr@10"], result["sasrec"]["sequential"]["hr@10"])
    schema = {"method": pl.String, "family": pl.String, "user_id": pl.Int64, "item_id": pl.Int64, "ranked": pl.List(pl.Int64)}
    return result, pl.DataFrame(cases, schema=schema, orient="row")
