"""The P5 training mixture, its validation and test cases, and the p5 params."""

import polars as pl
import pytest

from conftest import params_dict, source
from recpipe import RecpipeError
from recpipe.p5.families import FAMILIES
from recpipe.p5.sample import p5_mixture, shares
from recpipe.params import schema as params
from recpipe.params.p5 import P5Params
from test_families import amazon, make  # noqa: F401  (module fixture: Amazon-format tables and text)


@pytest.fixture(scope="module")
def samples(amazon):  # noqa: F811
    return make(amazon, list(FAMILIES))


def test_shares_follow_the_weights_and_add_up():
    assert shares(10, {"a": 1, "b": 1}) == {"a": 5, "b": 5}
    assert shares(10, {"a": 3, "b": 1}) == {"a": 8, "b": 2}  # 7.5 / 2.5: the tie goes to the first name
    assert sum(shares(7, {"a": 1, "b": 1, "c": 1}).values()) == 7
    assert shares(6, {"a": 0.5, "b": 0.25, "c": 0.25}) == {"a": 3, "b": 2, "c": 1}


def test_mixture_follows_the_weights_and_never_trains_on_unseen_or_test(samples):
    train, valid, test = p5_mixture(
        samples, P5Params(k=20, weights={"rating": 3, "sequential": 1}, valid_size=5, test_cases=3), seed=0
    )
    counts = dict(train.group_by("family").len().iter_rows())
    assert counts == {"rating": 15, "sequential": 5}
    assert train["seen"].all() and (train["split"] == "train").all()
    assert (train["answer"] == " " + train["target"]).all()  # written after the prompt and one space
    assert valid.height == 5 and set(valid["family"]) <= {"rating", "sequential"} and (valid["split"] == "valid").all()
    # every family is tested, 3 cases each, each case once with a seen and once with an unseen template
    per_case = test.group_by("family", "case_id").agg(pl.col("seen").sort())
    assert per_case.group_by("family").len()["len"].to_list() == [3] * len(set(samples["family"]))
    assert all(s == [False, True] for s in per_case["seen"].to_list())
    # no test target is a training target
    assert not train.join(test.select("user_id", "item_id"), on=["user_id", "item_id"], how="semi").height


@pytest.mark.parametrize("test_cases", [None, 3])
def test_nothing_asked_is_learned_in_any_family(amazon, test_cases):  # noqa: F811
    samples = make(amazon, list(FAMILIES), history_targets=True)
    train, valid, test = p5_mixture(samples, P5Params(k=None, valid_size=20, test_cases=test_cases), seed=0)

    def learned(frame):  # every (user, item) the loss covers: targets and history spans
        return set(frame.select("user_id", "item_id").iter_rows()) | {
            (u, s[2]) for u, spans in frame.select("user_id", "spans").iter_rows() for s in spans
        }

    asked_in_test = set(test.select("user_id", "item_id").iter_rows())
    asked_in_valid = set(valid.select("user_id", "item_id").iter_rows())
    assert not learned(train) & (asked_in_test | asked_in_valid)
    assert not asked_in_valid & asked_in_test

    def pool(split):
        return set(samples.filter(pl.col("split") == split).select("user_id", "item_id").iter_rows())

    # ... and only what is asked is held out: the rest of the test and validation pools still trains.
    assert bool(learned(train) & (pool("test") - asked_in_test)) == (test_cases is not None)
    assert learned(train) & (pool("valid") - asked_in_valid - asked_in_test)
    left_out = samples.filter(pl.col("split") == "train").height - train.height
    assert left_out > 0  # the fixture's families do ask about pairs other families train on


def test_mixture_is_deterministic_and_depends_on_the_seed(samples):
    p = P5Params(k=30, test_cases=4)
    a, b = p5_mixture(samples, p, seed=1), p5_mixture(samples.sample(fraction=1.0, shuffle=True, seed=9), p, seed=1)
    for x, y in zip(a, b):
        assert x.equals(y)
    assert not p5_mixture(samples, p, seed=2)[0].equals(a[0])


def test_full_data_and_too_large_k(samples):
    train, valid, test = p5_mixture(samples, P5Params(k=None, weights={"direct": 1}), seed=0)
    pool = samples.filter((pl.col("split") == "train") & (pl.col("family") == "direct"))
    asked = pl.concat([valid.select("user_id", "item_id"), test.select("user_id", "item_id")])
    assert train.height == pool.join(asked, on=["user_id", "item_id"], how="anti").height
    with pytest.raises(RecpipeError, match=r"p5.k=100000 \(rating: weight 1\) is \d+, larger than its pool"):
        p5_mixture(samples, P5Params(k=100_000, weights={"rating": 1}), seed=0)
    with pytest.raises(RecpipeError, match="no family with weight > 0"):
        p5_mixture(samples.filter(pl.col("family") == "rating"), P5Params(weights={"direct": 1}), seed=0)


def test_p5_params_are_checked(archives):
    base = [source("atomic", archives["atomic"])]
    with pytest.raises(RecpipeError, match="'nope' is not among the prepared datasets|'nope' has no entry"):
        params.parse(params_dict(base, p5={"datasets": ["nope"]}))
    with pytest.raises(RecpipeError, match="p5.weigths: unknown key"):
        params.parse(params_dict(base, p5={"weigths": {"rating": 1}}))
    with pytest.raises(RecpipeError, match="p5.weights"):
        params.parse(params_dict(base, p5={"weights": {"ratings": 1}}))
    with pytest.raises(RecpipeError, match="at least one above 0"):
        params.parse(params_dict(base, p5={"weights": {"rating": 0}}))
    with pytest.raises(RecpipeError, match="p5.beams"):
        params.parse(params_dict(base, p5={"beams": 5, "top_k": 10}))
    assert params.parse(params_dict(base, p5={"datasets": ["ml-100k"]})).p5.datasets == ("ml-100k",)
