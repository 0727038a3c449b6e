"""Non-LLM baselines for the sequential and direct recommendation tasks, scored exactly as the LLM
is, so that a report can set them side by side: item popularity, SASRec (Kang & McAuley 2018,
self-attentive sequential recommendation) and BPR-MF (matrix factorization trained with Rendle et
al.'s Bayesian personalized ranking loss).

Data and split. The rated interactions (rating not null, as recpipe.p5.families.build reads them) cut
by the same leave-one-out split (recpipe.p5.families.leave_one_out): each user's last item is the test
target and every item before it is the user's history; the history's last item is the user's
validation item. SASRec and BPR-MF (recpipe.collab) train as RecBole trains them:
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

import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping

import polars as pl
import torch

from recpipe import RecpipeError, log
from recpipe.collab.bprmf import train_bprmf
from recpipe.collab.sasrec import SASRec, sasrec_loss, sasrec_windows, tokens_of, train_sasrec
from recpipe.collab.training import CHUNK, VALID_K, Cases, early_stopping, ranks, threads
from recpipe.data.splits import loo_histories
from recpipe.metrics import hit_and_ndcg
from recpipe.params.p5 import BprmfParams, SasrecParams

# The models and their training live in recpipe.collab (TALLRec's encoders train them too); these
# names stay importable from here.
__all__ = [
    "SASRec",
    "baselines",
    "early_stopping",
    "popularity_scores",
    "rank_candidates",
    "ranks",
    "sasrec_loss",
    "sasrec_windows",
    "topk",
]

KS = (1, 5, 10)


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

    # One validation case per user with a validation item and training items, in user order.
    cases_at = [r for r in range(len(users)) if valid[r] is not None and train[r]]
    # early_stopping is looked up here, when the baselines run, so that a caller can watch each fit.
    model, fit = train_sasrec(
        train,
        Cases([train[r] for r in cases_at], [valid[r] for r in cases_at], [train[r] for r in cases_at]),
        items,
        p,
        seed,
        loop=early_stopping,
    )

    @torch.no_grad()
    def sasrec_scores(chunk: list[int]) -> torch.Tensor:
        # The test input: the whole history, the validation item included.
        seqs = torch.tensor([tokens_of(history[u], col, p.max_len) for u in chunk], dtype=torch.long).view(
            -1, p.max_len
        )
        return model.scores(seqs)

    with threads(p.threads):
        result["sasrec"], rows = _evaluate(sasrec_scores, items, history, target, direct, sequential_users)
    result["sasrec"] |= fit.metrics()
    cases += [("sasrec", *row) for row in rows]

    mf, mf_fit = train_bprmf(
        train,
        Cases(cases_at, [valid[r] for r in cases_at], [train[r] for r in cases_at]),
        items,
        pb,
        seed,
        loop=early_stopping,
    )

    @torch.no_grad()
    def bprmf_scores(chunk: list[int]) -> torch.Tensor:
        return mf.scores(torch.tensor([row[u] for u in chunk], dtype=torch.long))

    with threads(pb.threads):
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
