"""P5 evaluation: answers parsed and scored per kind, seen and unseen apart, every family end to end."""

import json
import math
import time

import polars as pl
import pytest
from pydantic import ValidationError

from recpipe.data.splits import loo_histories
from recpipe.metrics import (
    parse_rating,
    parse_yes_no,
    rating_metrics,
    text_metrics,
    yes_no_metrics,
)
from recpipe.model.decoding import generate
from recpipe.model.load import load
from recpipe.p5.evaluate import COLUMNS, evaluate_p5, family_metrics
from recpipe.p5.families import FAMILIES
from recpipe.params.p5 import P5Params
from test_families import amazon, make  # noqa: F401  (module fixture: Amazon-format tables and text)
from test_text_instructions_sample import built  # noqa: F401
from test_train_evaluate import tiny  # noqa: F401  (module fixture: the tiny model)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5", 5.0),
        ("5.0", 5.0),
        (" 4 stars", 4.0),
        ("4/5", 4.0),
        ("Rating: 3.5", 3.5),
        ("3.5 out of 5", 3.5),
        ("five", 5.0),
        ("Two stars.", 2.0),
        ("9", 5.0),
        ("0", 1.0),
        ("-2", 1.0),  # out of range: clamped
        ("no idea", None),
        ("", None),
        ("someone stone", None),
        ("none", None),  # no number, no number word
    ],
)
def test_parse_rating(text, expected):
    assert parse_rating(text, 1, 5) == expected


def test_rating_metrics_count_unparsable_and_clamped_answers():
    m = rating_metrics(["4", "2 stars", "I like it", "9"], [5, 2, 3, 4], 1, 5)
    # parsable: 4 (error -1), 2 (0), 9 clamped to 5 (+1); "I like it" counted, not scored
    assert m["rmse"] == round(math.sqrt(2 / 3), 4) == 0.8165 and m["mae"] == 0.6667
    assert m["unparsable"] == 1 and m["unparsable_rate"] == 0.25 and m["clamped"] == 1
    none = rating_metrics(["?", "good"], [1, 2], 1, 5)
    assert none["rmse"] is None and none["mae"] is None and none["unparsable"] == 2 and none["unparsable_rate"] == 1.0


def test_yes_no_accuracy_counts_other_answers_as_wrong():
    assert [parse_yes_no(t) for t in ["Yes.", "no", "NO, never", "maybe", "", " yes!"]] == [
        "yes",
        "no",
        "no",
        None,
        None,
        "yes",
    ]
    m = yes_no_metrics(["Yes.", "no", "No, never", "maybe", "", "YES!"], ["yes", "yes", "no", "no", "no", "yes"])
    assert m == {"yes_no_accuracy": 0.5, "yes_no_unparsable": 2, "yes_no_unparsable_rate": 0.3333}


def test_yes_no_probabilities_give_accuracy_at_one_half_and_auc():
    """Probabilities of yes: yes at 0.5 or more; the AUC ranks them (3 of 4 pairs ordered here)."""
    m = yes_no_metrics(["0.9", "0.2", "0.6", "0.4"], ["yes", "no", "no", "yes"])
    assert m == {"yes_no_accuracy": 0.5, "yes_no_unparsable": 0, "yes_no_unparsable_rate": 0.0, "yes_no_auc": 0.75}
    assert yes_no_metrics(["0.9", "0.2"], ["yes", "yes"])["yes_no_auc"] is None  # one class
    assert "yes_no_auc" not in yes_no_metrics(["0.9", "yes"], ["yes", "yes"])  # text answers: no ranking


def test_bleu_and_rouge_identical_and_disjoint():
    refs = ["the color lasts all day and feels light on the lips", "a great gloss for a very fair price"]
    same = text_metrics(refs, refs)
    assert same == {"bleu": 100.0, "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    apart = text_metrics(["quick brown foxes jump over lazy dogs today", "nothing here matches anything"], refs)
    assert apart["bleu"] < 1 and apart["rouge1"] == apart["rouge2"] == apart["rougeL"] == 0.0
    stemmed = text_metrics(["the colors last"], ["the color lasts"])
    assert stemmed["rouge1"] == 100.0  # Porter-stemmed
    with pytest.raises(ValueError):
        text_metrics(["a"], ["a", "b"])


def test_seen_and_unseen_are_scored_apart():
    rows = []
    for seen, answers in ((True, ["4", "2", "yes"]), (False, ["5", "x", "no"])):
        for (kind, target), answer in zip([("rating", "4"), ("rating", "3"), ("yes_no", "yes")], answers):
            rows.append(
                {
                    "family": "rating",
                    "template": "t",
                    "seen": seen,
                    "kind": kind,
                    "user_id": 1,
                    "item_id": 2,
                    "target": target,
                    "prediction": answer,
                }
            )
    m = family_metrics(pl.DataFrame(rows), (1, 5))
    seen, unseen = m["rating"]["seen"], m["rating"]["unseen"]
    assert (seen["n"], seen["n_rating"], seen["n_yes_no"]) == (3, 2, 1)
    assert (
        seen["rmse"] == 0.7071 and seen["mae"] == 0.5 and seen["unparsable"] == 0 and seen["yes_no_accuracy"] == 1.0
    )  # 4 vs 4, 2 vs 3
    assert unseen["rmse"] == unseen["mae"] == 1.0 and unseen["unparsable"] == 1 and unseen["yes_no_accuracy"] == 0.0


def test_batched_generation_matches_one_at_a_time(tiny, built):  # noqa: F811
    model, tok = load(str(tiny))
    prompts = [p[-n:] for p, n in zip(built[1]["prompt"].head(5).to_list(), (40, 200, 90, 300, 10))]  # lengths differ
    batched = generate(model, tok, prompts, max_new_tokens=6, batch_size=3)
    assert batched == [generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert all(isinstance(a, str) and "</s>" not in a for a in batched) and any(batched)


@pytest.fixture(scope="module")
def scored(amazon, tiny, tmp_path_factory):  # noqa: F811
    """6 test cases of every family (each with a seen and an unseen template), scored by the tiny
    random model through the stage's entry point (evaluate_p5 -> evaluate_families)."""
    inter, items, _ = amazon
    samples = make(amazon, list(FAMILIES))  # 10 negatives: 11 candidates per direct prompt
    test = samples.filter(pl.col("split") == "test")
    cases = (
        test.select("family", "user_id", "item_id")
        .unique(maintain_order=True)
        .group_by("family", maintain_order=True)
        .head(6)
    )
    test = test.join(cases, on=["family", "user_id", "item_id"], how="semi", maintain_order="left")
    d = tmp_path_factory.mktemp("p5eval")
    test.write_parquet(d / "test.parquet")
    inter.write_parquet(d / "interactions.parquet")
    pl.DataFrame({"item_id": items["item_id"], "name": items["name"]}).write_parquet(d / "names.parquet")
    model, tok = load(str(tiny))
    p5 = P5Params(beams=8, top_k=5, max_new_tokens=8, eval_batch_size=8)
    started = time.perf_counter()
    metrics = evaluate_p5(
        d / "test.parquet",
        d / "names.parquet",
        d / "interactions.parquet",
        d / "eval",
        d / "families",
        model,
        tok,
        p5,
        (1, 5),
    )
    print(f"evaluate_p5: {test.height} prompts in {time.perf_counter() - started:.1f} s")
    saved = {f.stem: json.loads(f.read_text()) for f in (d / "families").glob("*.json")}
    assert saved == metrics
    return (
        test,
        {u: set(h) for u, h in loo_histories(inter)[0].items()},
        metrics,
        pl.read_parquet(d / "eval" / "predictions.parquet"),
    )


def test_history_never_holds_the_test_item(amazon):  # noqa: F811
    history, targets = loo_histories(amazon[0])
    assert targets and not any(targets[u] in history[u] for u in targets)


def test_every_family_seen_and_unseen(scored):
    test, _, metrics, _ = scored
    assert list(metrics) == list(FAMILIES)
    for family, groups in metrics.items():
        assert set(groups) == {"seen", "unseen"}
        for name, seen in (("seen", True), ("unseen", False)):
            rows = test.filter((pl.col("family") == family) & (pl.col("seen") == seen))
            assert groups[name]["n"] == rows.height > 0, (family, name)
            for kind, count in rows.group_by("kind").len().iter_rows():
                assert groups[name][f"n_{kind}"] == count
    # mixed kinds keep their own names: ratings and yes/no in rating, items and yes/no in direct
    assert {"rmse", "mae", "unparsable", "yes_no_accuracy", "yes_no_unparsable"} <= set(metrics["rating"]["seen"])
    assert {"hr@5", "ndcg@5", "validity", "yes_no_accuracy"} <= set(metrics["direct"]["seen"])
    assert {"bleu", "rouge1", "rouge2", "rougeL", "rmse"} <= set(metrics["review"]["seen"])


def test_metric_values_in_range(scored):
    _, _, metrics, _ = scored
    for family in ("sequential", "direct"):
        for m in metrics[family].values():
            assert m["validity"] == 1.0  # constrained decoding names an item with every beam
            assert m["short_lists"] == 0  # every case ranks top_k items outside the user's history
            assert all(0 <= m[f"{x}@{k}"] <= 1 for x in ("hr", "ndcg") for k in (1, 5))
            assert m["hr@1"] <= m["hr@5"] and m["ndcg@5"] <= m["hr@5"]
    for m in metrics["rating"].values():
        assert 0 <= m["unparsable"] <= m["n_rating"]
        assert m["rmse"] is None or 0 <= m["mae"] <= m["rmse"] <= 4
    for family in ("explanation", "review"):
        for m in metrics[family].values():
            assert all(0 <= m[x] <= 100 for x in ("bleu", "rouge1", "rouge2", "rougeL"))


def test_ratings_and_yes_no_answered_by_probabilities_or_by_greedy_text(scored, tiny):  # noqa: F811
    """rating_scoring "expected" (the default) writes each rating prompt's mean rating over the
    scale and each yes/no prompt's probability of yes against no; "greedy" the generated text,
    as the other text kinds."""
    from recpipe.model.decoding import answer_probabilities, expected_ratings
    from recpipe.p5.evaluate import predict
    from recpipe.p5.families import rating_text

    test, _, _, predictions = scored
    ratings = predictions.filter(pl.col("kind") == "rating")
    assert ratings.height and all(1 <= float(x) <= 5 for x in ratings["prediction"])
    model, tok = load(str(tiny))
    rows = test.filter(pl.col("kind") == "rating").head(3)
    means = expected_ratings(
        model, tok, rows["prompt"].to_list(), {r: rating_text(r) for r in (1.0, 2.0, 3.0, 4.0, 5.0)}
    )
    assert predict(rows, model, tok, {}, None, P5Params(), rating_range=(1, 5))["prediction"].to_list() == [
        f"{m:.4f}" for m in means
    ]
    greedy = P5Params(rating_scoring="greedy", max_new_tokens=8, eval_batch_size=8)
    assert predict(rows, model, tok, {}, None, greedy)["prediction"].to_list() == generate(
        model, tok, rows["prompt"].to_list(), 8, 8
    )
    questions = test.filter(pl.col("kind") == "yes_no").head(3)
    p_yes = [float(p[0]) for p in answer_probabilities(model, tok, questions["prompt"].to_list(), ["yes", "no"])]
    assert predict(questions, model, tok, {}, None, P5Params())["prediction"].to_list() == [f"{p:.4f}" for p in p_yes]
    assert predict(questions, model, tok, {}, None, greedy)["prediction"].to_list() == generate(
        model, tok, questions["prompt"].to_list(), 8, 8
    )
    with pytest.raises(ValidationError):
        P5Params(rating_scoring="mode")


def test_predictions_frame_rankings_and_recomputed_metrics(scored):
    test, history, metrics, predictions = scored
    assert predictions.columns == COLUMNS and predictions.height == test.height
    keys = ["family", "template", "seen", "user_id", "item_id", "target"]
    assert predictions.select(keys).equals(test.select(keys))  # in the test rows' order
    items = predictions.filter(pl.col("kind") == "item").join(
        test.select("template", "user_id", "item_id", "candidates"), on=["template", "user_id", "item_id"]
    )
    assert items.height == test.filter(pl.col("kind") == "item").height
    for row in items.iter_rows(named=True):
        assert len(row["ranked"]) == len(set(row["ranked"])) == 5  # k items, history excluded inside the search
        assert not set(row["ranked"]) & history[row["user_id"]]  # the user's history is excluded
        if row["family"] == "direct":  # 11 candidates, none in the history, 8 beams: 5 distinct items
            assert set(row["ranked"]) <= set(row["candidates"]) and len(row["ranked"]) == 5
    assert predictions.filter(pl.col("kind") != "item")["ranked"].is_null().all()
    assert family_metrics(predictions, (1, 5), ks=(1, 5)) == metrics  # the saved frame gives the same numbers


def test_validation_split_is_scored_with_its_own_history(amazon, tiny, tmp_path):  # noqa: F811
    """p5.evaluate_split valid: the validation rows alone, seen templates; each ranking excludes the
    items rated before the validation item, not the item itself."""
    inter, items, _ = amazon
    samples = make(amazon, ["rating", "sequential", "direct"])
    valid = (
        samples.filter(pl.col("split") == "valid")
        .group_by("family", maintain_order=True)
        .head(4)
        .select(samples.columns)
    )
    pl.concat([valid, samples.filter(pl.col("split") == "test").head(6)]).write_parquet(tmp_path / "shots.parquet")
    inter.write_parquet(tmp_path / "interactions.parquet")
    pl.DataFrame({"item_id": items["item_id"], "name": items["name"]}).write_parquet(tmp_path / "names.parquet")
    model, tok = load(str(tiny))
    p5 = P5Params(beams=6, top_k=5, eval_batch_size=4, evaluate_split="valid")
    metrics = evaluate_p5(
        *(tmp_path / f for f in ("shots.parquet", "names.parquet", "interactions.parquet", "eval", "families")),
        model,
        tok,
        p5,
        (1, 5),
    )
    assert set(metrics) == {"rating", "sequential", "direct"}
    for family, groups in metrics.items():
        assert groups["seen"]["n"] == valid.filter(pl.col("family") == family).height > 0 and groups["unseen"] == {
            "n": 0
        }
    predictions = pl.read_parquet(tmp_path / "eval" / "predictions.parquet")
    assert predictions.height == valid.height  # the test rows in the same file are not scored
    before, target = loo_histories(inter, "valid")
    for row in predictions.filter(pl.col("kind") == "item").iter_rows(named=True):
        assert row["item_id"] == target[row["user_id"]] not in before[row["user_id"]] and len(row["ranked"]) == 5
        assert not set(row["ranked"]) & set(before[row["user_id"]])


def test_direct_candidates_ranked_by_likelihood_or_by_beams(amazon, tiny):  # noqa: F811
    from recpipe.model.decoding import likelihood_ranking
    from recpipe.p5.evaluate import rank
    from recpipe.p5.indexing import item_names

    model, tok = load(str(tiny))
    names = item_names(amazon[1], amazon[0], "names", 0)
    rows = make(amazon, ["direct"]).filter((pl.col("split") == "test") & (pl.col("kind") == "item")).head(4)
    p5 = P5Params(top_k=3, beams=4, eval_batch_size=2)
    exact = rank(rows, model, tok, names, None, p5.model_copy(update={"direct_ranking": "likelihood"}))
    beams = rank(rows, model, tok, names, None, p5.model_copy(update={"direct_ranking": "beam"}))
    scored = likelihood_ranking(model, tok, rows["prompt"].to_list(), rows["candidates"].to_list(), names)
    assert exact["ranked"].to_list() == [s[:3] for s in scored] and exact["validity"].to_list() == [1.0] * 4
    for out in (exact, beams):
        for ranked, candidates in zip(out["ranked"].to_list(), rows["candidates"].to_list()):
            assert len(ranked) == 3 and set(ranked) <= set(candidates)
    assert all(0 < v <= 1 for v in beams["validity"].to_list())
    with pytest.raises(ValidationError, match="direct_ranking"):
        P5Params(direct_ranking="exact")


def test_sequential_ranked_by_likelihood_over_every_unrated_item(amazon, tiny):  # noqa: F811
    from recpipe.model.decoding import likelihood_ranking
    from recpipe.p5.evaluate import rank
    from recpipe.p5.indexing import item_names

    model, tok = load(str(tiny))
    names = item_names(amazon[1], amazon[0], "names", 0)
    history = {u: set(h) for u, h in loo_histories(amazon[0])[0].items()}
    rows = make(amazon, ["sequential"]).filter((pl.col("split") == "test") & pl.col("seen")).head(3)
    out = rank(
        rows, model, tok, names, history, P5Params(top_k=5, beams=5, eval_batch_size=2, sequential_ranking="likelihood")
    )
    for row, ranked in zip(rows.iter_rows(named=True), out["ranked"].to_list()):
        unrated = [i for i in sorted(names) if i not in history[row["user_id"]]]
        assert ranked == likelihood_ranking(model, tok, [row["prompt"]], [unrated], names)[0][:5]
        assert not set(ranked) & history[row["user_id"]]
    assert out["validity"].to_list() == [1.0] * 3
    with pytest.raises(ValidationError, match="sequential_ranking"):
        P5Params(sequential_ranking="exact")


def test_beam_ranking_gives_k_unseen_items_when_the_history_covers_most(amazon, tiny):  # noqa: F811
    """A history of all but 7 items: the search never writes a history item, so each case still
    ranks k = 5 items with 5 beams, and short_lists counts the one user with 3 unseen items left."""
    from recpipe.p5.evaluate import group_metrics, rank
    from recpipe.p5.indexing import item_names

    model, tok = load(str(tiny))
    names = item_names(amazon[1], amazon[0], "names", 0)
    rows = make(amazon, ["sequential"]).filter((pl.col("split") == "test") & pl.col("seen")).head(3)
    users = rows["user_id"].to_list()
    everything = sorted(names)
    history = {users[0]: set(everything[7:]), users[1]: set(everything[:-7]), users[2]: set(everything[3:])}
    out = rank(rows, model, tok, names, history, P5Params(top_k=5, beams=5, eval_batch_size=2))
    ranked = out["ranked"].to_list()
    assert [len(r) for r in ranked] == [5, 5, 3] and sorted(ranked[2]) == everything[:3]
    assert all(not set(r) & history[u] for r, u in zip(ranked, users))
    assert group_metrics(out.with_columns(kind=pl.lit("item")), (1, 5), (1, 5))["short_lists"] == 1
