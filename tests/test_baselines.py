"""Non-LLM baselines: popularity, SASRec and BPR-MF on the leave-one-out split, ranked and scored as the LLM is."""

import random

import polars as pl
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from recpipe import RecpipeError
from recpipe.data.splits import leave_one_out, loo_histories
from recpipe.p5 import baselines as module
from recpipe.p5.baselines import (
    SASRec,
    baselines,
    early_stopping,
    popularity_scores,
    rank_candidates,
    ranks,
    sasrec_loss,
    sasrec_windows,
    topk,
)
from recpipe.p5.families import build, load_templates
from recpipe.params.collab import BprmfParams, SasrecParams
from recpipe.params.p5 import P5Params

N_USERS, N_ITEMS = 60, 40
# Small and quick: the planted pattern needs no more (HR@5 = 1.0 on seeds 0, 1 and 2).
FAST = SasrecParams(max_len=20, hidden=32, blocks=1, heads=1, dropout=0.1, epochs=10, batch_size=32, lr=2e-2)
FAST_MF = BprmfParams(dim=16, epochs=30, patience=5, batch_size=128, lr=5e-2)


def planted(seed: int = 0, users: int = N_USERS, lengths: tuple[int, int] = (8, 16)) -> pl.DataFrame:
    """Each user walks the items i, i+1, i+2, ... (mod N_ITEMS) from a random start, in time order;
    the rows come shuffled, as in a ratings file."""
    rng = random.Random(seed)
    rows = []
    for u in range(1, users + 1):
        start, t = rng.randrange(N_ITEMS), 880_000_000 + rng.randrange(10_000)
        for step in range(rng.randint(*lengths)):
            rows.append((u, (start + step) % N_ITEMS + 1, float(rng.randint(1, 5)), t + 60 * step))
    rng.shuffle(rows)
    frame = pl.DataFrame(
        rows,
        schema={"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64},
        orient="row",
    )
    return frame.with_row_index("row").with_columns(
        pl.col("row").cast(pl.Int64)
    )  # the file order, as ingest records it


def test_histories_follow_the_leave_one_out_split():
    inter = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 3, 1],
            "item_id": [5, 6, 7, 8, 9, 4, 3],
            "rating": [4.0, 3.0, 5.0, 1.0, 2.0, 5.0, None],
            "timestamp": [30, 10, 20, 1, 2, 1, 40],
            "row": range(7),
        }
    )
    history, target = loo_histories(inter)
    # User 1's unrated item 3 is no interaction here; user 3 has one item: no history, no test case.
    assert history == {1: [6, 7], 2: [8]} and target == {1: 5, 2: 9}


@pytest.fixture(scope="module")
def walk():
    """The planted data, its direct cases as recpipe.p5.families.build writes them, and both baselines' scores."""
    inter = planted()
    items = pl.DataFrame({"item_id": range(1, N_ITEMS + 1), "name": [f"Item {i}" for i in range(1, N_ITEMS + 1)]})
    users = pl.DataFrame({"user_id": range(1, N_USERS + 1), "text": ["A user."] * N_USERS})
    p5 = P5Params(negatives=9, history_targets=False, sequential_stride=1)
    names = dict(zip(items["item_id"].to_list(), items["name"].to_list()))
    samples = build(inter, names, users, load_templates("p5", ["direct"]), ["direct"], p5, seed=0, max_rating=5)
    return inter, samples, baselines(inter, samples, FAST, seed=0, bprmf=FAST_MF)[0]


def test_sasrec_beats_popularity_on_a_planted_sequence(walk):
    _, _, result = walk
    assert result["users"] == N_USERS and result["items"] == N_ITEMS
    sasrec, popularity = result["sasrec"]["sequential"], result["popularity"]["sequential"]
    # The next item is always the last one + 1: SASRec learns that; counts cannot (they only
    # favour items near many walks, which the next item often is: 0.4 here).
    assert sasrec["hr@5"] >= 0.9 and sasrec["hr@1"] >= 0.6, sasrec
    assert popularity["hr@5"] <= 0.5, popularity
    assert sasrec["hr@5"] >= popularity["hr@5"] + 0.4 and sasrec["ndcg@10"] >= popularity["ndcg@10"] + 0.4


def test_sasrec_never_sees_later_items():
    model = SASRec(N_ITEMS, FAST).eval()
    seq = torch.tensor([[0] * 12 + [5, 6, 7, 8, 9, 10, 11, 12]])
    later = seq.clone()
    later[0, -3:] = torch.tensor([30, 31, 32])  # only the last three items differ
    with torch.no_grad():
        a, b = model(seq), model(later)
    assert torch.allclose(a[:, :-3], b[:, :-3], atol=1e-6) and not torch.allclose(a[:, -1], b[:, -1])


def test_popularity_counts_and_tie_break():
    counts = popularity_scores([[1, 2, 3], [2, 3], [3, 7], [7]])
    assert counts == {1: 1, 2: 2, 3: 3, 7: 2}
    items = [1, 2, 3, 4, 5, 6, 7]
    row = torch.tensor([float(counts.get(i, 0)) for i in items])
    # By count; equal counts go to the lower item_id (2 before 7, then 4, 5, 6 at zero).
    assert topk(row.unsqueeze(0), items, 7, [()]) == [[3, 2, 7, 1, 4, 5, 6]]
    # History items are never returned, even when k asks for more than is left.
    assert topk(row.expand(2, -1), items, 10, [[3, 1], [2, 6, 7]]) == [[2, 7, 4, 5, 6], [3, 1, 4, 5]]


def test_ranking_never_returns_a_history_item():
    inter = planted(lengths=(20, 30))
    history, _ = loo_histories(inter)
    users = sorted(history)
    items = list(range(1, N_ITEMS + 1))
    scores = torch.rand(len(users), len(items), generator=torch.Generator().manual_seed(0))
    ranked = topk(scores, items, 10, [history[u] for u in users])
    for u, top in zip(users, ranked):
        assert len(top) == 10 and not set(top) & set(history[u])


def test_same_seed_same_metrics():
    inter = planted(seed=1)
    fast = FAST.model_copy(update={"epochs": 3})
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    first, cases = baselines(inter, None, fast, seed=7)
    again = baselines(inter, None, fast, seed=7)
    assert again[0] == first and again[1].equals(cases)
    # The caller's thread count and global RNG are left as they were.
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    assert baselines(inter, None, fast, seed=8)[0]["popularity"] == first["popularity"]


def _direct_rows(inter: pl.DataFrame, n_negatives: int, seed: int = 0) -> pl.DataFrame:
    """Direct test rows as recpipe.p5.families.build writes them: one seen and one unseen row per case,
    plus rows the baselines must ignore (train split, a yes/no question, another family)."""
    rng = random.Random(seed)
    history, target = loo_histories(inter)
    rows = []
    for u, item in target.items():
        unseen = [i for i in range(1, N_ITEMS + 1) if i not in history[u] and i != item]
        cands = rng.sample(unseen, n_negatives) + [item]
        rng.shuffle(cands)
        for seen in (True, False):
            rows.append(
                {
                    "family": "direct",
                    "kind": "item",
                    "split": "test",
                    "seen": seen,
                    "user_id": u,
                    "item_id": item,
                    "candidates": cands,
                }
            )
        rows.append(
            {
                "family": "direct",
                "kind": "yes_no",
                "split": "test",
                "seen": True,
                "user_id": u,
                "item_id": cands[0],
                "candidates": cands,
            }
        )
        rows.append(
            {
                "family": "direct",
                "kind": "item",
                "split": "train",
                "seen": True,
                "user_id": u,
                "item_id": history[u][-1],
                "candidates": [1],
            }
        )
        rows.append(
            {
                "family": "sequential",
                "kind": "item",
                "split": "test",
                "seen": True,
                "user_id": u,
                "item_id": item,
                "candidates": None,
            }
        )
    return pl.DataFrame(rows, schema_overrides={"candidates": pl.List(pl.Int64)})


def test_direct_ranks_only_the_candidates():
    scores = torch.tensor([9.0, 1.0, 5.0, 5.0, 0.0])  # item 1 scores best but is no candidate
    columns = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4}
    assert rank_candidates(scores, columns, [5, 4, 2, 3], 10) == [3, 4, 2, 5]  # 3 and 4 tie: 3 first
    assert rank_candidates(scores, columns, [2, 5], 1) == [2]
    inter = planted()
    result = baselines(inter, _direct_rows(inter, n_negatives=1), FAST.model_copy(update={"epochs": 2}), seed=0)[0]
    assert result["direct_cases"] == N_USERS  # each case once; other rows ignored
    for method in ("popularity", "sasrec", "bprmf"):
        direct = result[method]["direct"]
        assert direct["hr@5"] == direct["hr@10"] == 1.0, (
            method,
            direct,
        )  # 2 candidates: the target is always in the top 5
        assert 0 < direct["hr@1"] <= 1 and direct["ndcg@5"] >= 1 / 1.5849625 - 1e-5


def test_direct_cases_from_the_families_stage(walk):
    _, samples, result = walk
    cases = samples.filter((pl.col("family") == "direct") & (pl.col("split") == "test") & (pl.col("kind") == "item"))
    assert cases.height > cases["user_id"].n_unique() > 0  # some cases written with two templates
    assert result["direct_cases"] == cases["user_id"].n_unique()
    # 10 candidates, the next item of the walk among them: SASRec ranks it first for most users.
    assert result["sasrec"]["direct"]["hr@1"] >= 0.8 > result["popularity"]["direct"]["hr@1"] + 0.3


def test_direct_cases_must_match_the_split():
    inter = planted()
    rows = _direct_rows(inter, n_negatives=3)
    wrong = rows.with_columns(candidates=pl.lit([999], dtype=pl.List(pl.Int64)))
    with pytest.raises(RecpipeError, match="is not among its candidates"):
        baselines(inter, wrong, FAST.model_copy(update={"epochs": 1}), seed=0)
    with pytest.raises(RecpipeError, match="the cases come from another split"):
        baselines(
            inter,
            rows.with_columns(item_id=pl.col("item_id") % N_ITEMS + 1),
            FAST.model_copy(update={"epochs": 1}),
            seed=0,
        )


def test_too_few_interactions_is_an_error():
    two_each = planted(lengths=(2, 2))
    with pytest.raises(RecpipeError, match="no user has 3 or more rated items"):
        baselines(two_each, None, FAST, seed=0)
    with pytest.raises(RecpipeError, match="no user has 3 or more rated items"):
        baselines(two_each.head(0), None, FAST, seed=0)


def test_params_are_checked():
    with pytest.raises(ValidationError, match="epoch"):
        SasrecParams(epoch=3)
    with pytest.raises(ValidationError, match=r"sasrec.hidden \(64\) must be divisible by sasrec.heads \(3\)"):
        SasrecParams(hidden=64, heads=3)


def test_sequential_scored_on_the_llms_sampled_users(walk):
    inter, samples, full = walk
    asked = [1, 2, 3, 5, 8]
    sub, cases = baselines(inter, samples, FAST, seed=0, sequential_users=asked, bprmf=FAST_MF)
    assert sub["sequential_cases"] == len(asked)
    for method in ("popularity", "sasrec", "bprmf"):
        assert sub[method]["sequential_all_users"] == full[method]["sequential"]
        assert sub[method]["direct"] == full[method]["direct"]
    # Each method's top-k per scored case: the metrics follow from them (the report's paired tests use them).
    from recpipe.metrics import hit_and_ndcg

    for (method, family), rows in cases.group_by("method", "family", maintain_order=True):
        assert hit_and_ndcg(rows["ranked"].to_list(), rows["item_id"].to_list(), (1, 5, 10)) == sub[method][family]
    assert set(cases.filter(pl.col("family") == "sequential")["user_id"]) == set(asked) & set(cases["user_id"])
    # hr@10 of 5 users is a multiple of 1/5
    assert all(round(sub[m]["sequential"]["hr@10"] * 5, 6).is_integer() for m in ("popularity", "sasrec", "bprmf"))


def test_early_stopping_keeps_the_best_validation_epoch():
    """The weights of the epoch with the best validation score are kept (the first of equal ones),
    and training stops `patience` epochs after it, or at `epochs`."""
    scores = [0.1, 0.3, 0.2, 0.3, 0.25, 0.1, 0.05, 0.9]
    model = nn.Linear(1, 1, bias=False)

    def run(epochs, patience):
        epoch = iter(range(1, 100))
        valid = iter(scores)

        def train_epoch():
            with torch.no_grad():
                model.weight.fill_(next(epoch))  # the weights say which epoch they come from
            return 0.0

        return early_stopping(model, train_epoch, lambda: next(valid), epochs, patience, "test")

    fit = run(epochs=100, patience=3)
    assert (fit.best_epoch, fit.best_valid, fit.epochs_run) == (2, 0.3, 5) and fit.valid == scores[:5]
    assert model.weight.item() == 2.0 and not model.training
    assert fit.metrics() == {"best_epoch": 2, "best_valid_ndcg@10": 0.3, "epochs_run": 5}
    fit = run(epochs=3, patience=3)
    assert (fit.best_epoch, fit.epochs_run, model.weight.item()) == (2, 3, 2.0)
    fit = run(epochs=8, patience=10)  # a late best is found when patience allows it
    assert (fit.best_epoch, fit.epochs_run, model.weight.item()) == (8, 8, 8.0)


def test_validation_ranks_as_topk_does():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.9], [1.0, 2.0, 3.0, 4.0, 5.0]])
    exclude = torch.tensor([[False, True, False, False, False], [False, False, False, False, True]])
    items = [10, 11, 12, 13, 14]
    ranked = topk(scores, items, 5, [[11], [14]])
    # row 0: 14 first (11 left out), then 10 and 12 tie (10 first); row 1: the excluded 14 never ranks
    assert ranked == [[14, 10, 12, 13], [13, 12, 11, 10]]
    assert ranks(scores, torch.tensor([2, 1]), exclude).tolist() == [2, 2]
    assert ranks(scores, torch.tensor([0, 4]), exclude).tolist() == [1, 5]


def test_padding_is_masked():
    """A sequence's hidden states do not depend on how much left padding comes before it, nor on
    the other sequences of its batch."""
    model = SASRec(N_ITEMS, FAST.model_copy(update={"blocks": 2, "heads": 2})).eval()
    seq = [5, 6, 7, 8, 9]
    with torch.no_grad():
        short = model(torch.tensor([seq]))
        padded = model(torch.tensor([[0] * 7 + seq]))
        full = model(torch.tensor([[0] * (FAST.max_len - 5) + seq, list(range(1, FAST.max_len + 1))]))
    assert torch.allclose(short, padded[:, -5:], atol=1e-5) and torch.allclose(short, full[:1, -5:], atol=1e-5)


def test_every_position_is_a_training_target():
    tokens = [list(range(1, 46)), [7, 8], [9]]  # 45 tokens with max_len 20: three windows
    inputs, targets, owner = sasrec_windows(tokens, 20)
    assert owner == [0, 0, 0, 1]  # a single token has nothing to predict
    learned = [(s, int(t)) for s, row in zip(owner, targets) for t in row if t > 0]
    assert sorted(learned) == sorted([(0, t) for t in range(2, 46)] + [(1, 8)])  # each token after the first, once
    for inp, tgt in zip(inputs, targets):  # each target's input is the token before it
        real = tgt > 0
        assert torch.equal(inp[real] + 1, tgt[real]) or torch.equal(inp[real], torch.tensor([7]))
    # The loss reaches every real position and no padding position, for both losses.
    model = SASRec(N_ITEMS, FAST)
    tgt = torch.tensor([[0, 0, 3, 4, 5], [6, 7, 8, 9, 10]])
    for loss in ("ce", "bce"):
        h = torch.randn(2, 5, FAST.hidden, requires_grad=True)
        sasrec_loss(model, h, tgt, loss, torch.full_like(tgt, 1)).backward()
        moved = h.grad.abs().sum(-1) > 0
        assert torch.equal(moved, tgt > 0), loss


def clusters(users: int = 200, groups: int = 4, size: int = 10, each: int = 7, seed: int = 0) -> pl.DataFrame:
    """Collaborative structure with no order: each user rates `each` random items of their group's
    `size` items, in random order; every item about as popular as any other."""
    rng = random.Random(seed)
    rows = []
    for u in range(1, users + 1):
        g = u % groups
        for step, item in enumerate(rng.sample(range(g * size + 1, (g + 1) * size + 1), each)):
            rows.append((u, item, 4.0, 880_000_000 + 60 * step))
    frame = pl.DataFrame(
        rows,
        schema={"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64},
        orient="row",
    )
    return frame.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))


def test_bprmf_beats_popularity_on_collaborative_structure():
    result = baselines(clusters(), None, FAST.model_copy(update={"epochs": 1}), seed=0, bprmf=FAST_MF)[0]
    mf, popularity = result["bprmf"]["sequential"], result["popularity"]["sequential"]
    # 6 history items of the group left out: the test item is one of the group's 4 others.
    assert mf["hr@5"] >= 0.9 and popularity["hr@5"] <= 0.4, (mf, popularity)
    assert 1 <= result["bprmf"]["best_epoch"] <= result["bprmf"]["epochs_run"] <= FAST_MF.epochs
    assert result["bprmf"]["best_valid_ndcg@10"] > 0.3


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_validation_and_test_items_never_train_the_models(monkeypatch, loss):
    """Changing every user's validation and test items changes nothing the models train on: the
    same losses epoch after epoch, only the validation scores differ."""
    inter = planted(seed=2)
    split = leave_one_out(inter).select("row", "split")
    moved = (
        inter.join(split, on="row")
        .with_columns(
            item_id=pl.when(pl.col("split") != "train")
            .then((pl.col("item_id") + 16) % N_ITEMS + 1)
            .otherwise(pl.col("item_id"))
        )
        .drop("split")
    )
    assert set(moved["item_id"]) == set(inter["item_id"])  # the same item set: the same columns
    fits = []
    real = module.early_stopping

    def record(*args, **kwargs):
        fits.append(real(*args, **kwargs))
        return fits[-1]

    monkeypatch.setattr(module, "early_stopping", record)
    sasrec = FAST.model_copy(update={"epochs": 4, "patience": 10, "loss": loss})
    mf = FAST_MF.model_copy(update={"epochs": 4, "patience": 10})
    results = [baselines(frame, None, sasrec, seed=0, bprmf=mf)[0] for frame in (inter, moved)]
    (s1, m1, s2, m2) = fits
    for a, b in ((s1, s2), (m1, m2)):
        assert a.epochs_run == b.epochs_run == 4 and a.losses == b.losses
        assert a.valid != b.valid  # the validation items are read by the validation only
    assert results[0]["sasrec"]["sequential"] != results[1]["sasrec"]["sequential"]


def test_sasrec_is_early_stopped_and_reports_its_epoch(walk):
    _, _, result = walk
    for method, p in (("sasrec", FAST), ("bprmf", FAST_MF)):
        r = result[method]
        assert 1 <= r["best_epoch"] <= r["epochs_run"] <= p.epochs and 0 < r["best_valid_ndcg@10"] <= 1
        assert r["epochs_run"] == p.epochs or r["epochs_run"] == r["best_epoch"] + p.patience
