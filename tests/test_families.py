"""P5-style task families: templates, splits, history spans, seen/unseen, skipped families."""

import polars as pl
import pytest

from recpipe import RecpipeError
from recpipe.p5.families import (
    FAMILIES,
    build,
    choose,
    feature_hint,
    first_sentence,
    load_templates,
)
from recpipe.p5.indexing import item_names
from recpipe.params.p5 import P5Params
from test_formats import amazon_files, amazon_records, amazon_source, fetch_and_ingest
from test_text_instructions_sample import built  # noqa: F401  (module fixture: ML-style data stages)


@pytest.fixture(scope="module")
def amazon(tmp_path_factory):
    from recpipe.data.textualize import textualize

    d = tmp_path_factory.mktemp("amazon")
    tables = fetch_and_ingest(d, amazon_source(*amazon_files(d, *amazon_records())), template="amazon")
    textualize(d / "tables", d / "text", template="amazon", move_article=True)
    text = {name: pl.read_parquet(d / "text" / f"{name}.parquet") for name in ("items", "users")}
    return tables["interactions"], text["items"], text["users"]


def make(tables, families, seed: int = 0, **p5):
    """The families' samples with 10 negatives, every history position a sequential sample and no
    history spans, unless p5 (P5Params fields) says otherwise."""
    inter, items, users = tables
    p5 = P5Params(**{"negatives": 10, "history_targets": False, "sequential_stride": 1, **p5})
    names = item_names(items, inter, p5.indexing, seed, p5.clusters)
    return build(inter, names, users, load_templates("p5", families), families, p5, seed=seed, max_rating=5)


def test_every_family_on_review_data(amazon):
    samples = make(amazon, list(FAMILIES))
    assert set(samples["family"]) == set(FAMILIES)
    for family in FAMILIES:
        fam = samples.filter(pl.col("family") == family)
        assert set(fam["split"]) == {"train", "valid", "test"}, family
        test = fam.filter(pl.col("split") == "test")
        assert test["seen"].sum() == (~test["seen"]).sum() > 0  # each test case: one seen, one unseen
        assert not fam.filter(pl.col("split") != "test")["seen"].not_().any()  # unseen never trains
        assert fam["prompt"].str.contains(r"\{").not_().all()  # every placeholder filled
    direct = samples.filter((pl.col("family") == "direct") & pl.col("target").is_in(["yes", "no"]).not_())
    assert (direct["candidates"].list.len() == 11).all()
    assert all(i in c for i, c in zip(direct["item_id"], direct["candidates"]))


def test_leave_one_out_tests_each_users_last_item(amazon):
    inter = amazon[0]
    samples = make(amazon, ["sequential"])
    last = (
        inter.sort(["user_id", "timestamp", "row"])
        .group_by("user_id", maintain_order=True)
        .last()
        .select("user_id", "item_id")
    )
    test = samples.filter((pl.col("split") == "test") & pl.col("seen")).select("user_id", "item_id").sort("user_id")
    assert test.equals(last.sort("user_id"))


def test_deterministic_and_ids_do_not_follow_order(amazon):
    a, b = make(amazon, ["sequential"], seed=3), make(amazon, ["sequential"], seed=3)
    assert a.equals(b)
    with_ids = make(amazon, ["sequential"], indexing="random", seed=3)
    target_ids = with_ids.filter(pl.col("split") == "test")["target"].cast(pl.Int64)
    assert target_ids.min() >= 1000
    # Numbered by a seeded shuffle: item ids in id order are not numbered in order.
    assert with_ids["target"].cast(pl.Int64).to_list() != sorted(with_ids["target"].cast(pl.Int64).to_list())


def test_review_families_need_review_text(built):  # noqa: F811
    root, _ = built
    inter = pl.read_parquet(root / "tables" / "interactions.parquet")
    assert choose(None, inter, "ml-100k") == ["rating", "sequential", "direct"]
    with pytest.raises(RecpipeError, match=r"\['review'\] need review text, which dataset 'ml-100k' does not have"):
        choose(["rating", "review"], inter, "ml-100k")
    with pytest.raises(RecpipeError, match="unknown families"):
        choose(["ratings"], inter, "ml-100k")


def test_template_file_missing_a_part_names_file_and_place(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text(
        "rating:\n  seen:\n    - prompt: 'Rate {item} for {usr}'\n      target: '{rating}'\n  unseen:\n    - prompt: x\n      target: y\n"
    )
    with pytest.raises(RecpipeError, match=r"t.yaml: rating.seen\[0\].prompt has unknown placeholders \['usr'\]"):
        load_templates(str(bad), ["rating"])
    with pytest.raises(RecpipeError, match=r"t.yaml: family 'sequential' has no 'seen' templates"):
        load_templates(str(bad), ["sequential"])


def test_prompts_end_without_a_space_and_item_lists_stand_apart(tmp_path):
    """The answer is written after one space of its own, and an item list follows a space and is
    followed by whitespace, so that no name's first or last token fuses with the text around it."""
    data = load_templates("p5", list(FAMILIES))
    prompts = [t["prompt"] for family in FAMILIES for kind in ("seen", "unseen") for t in data[family][kind]]
    assert all(p == p.rstrip() for p in prompts)
    base = "sequential:\n  seen:\n    - prompt: {!r}\n      target: '{{item}}'\n  unseen:\n    - prompt: 'After {{history}} then?'\n      target: '{{item}}'\n"
    for prompt, problem in (
        ("Seen: {history}.\nNext item: ", "ends with a space or line break"),
        ("Seen: {history}.\nNext item:", "must follow a space and be followed by a space or a line break"),
        ("Seen ({history})\nNext item:", "must follow a space and be followed by a space or a line break"),
    ):
        bad = tmp_path / "t.yaml"
        bad.write_text(base.format(prompt))
        with pytest.raises(RecpipeError, match=rf"t.yaml: sequential.seen\[0\].prompt.*{problem}"):
            load_templates(str(bad), ["sequential"])


def test_explanation_helpers():
    assert first_sentence("Great lipstick. Lasts all day!") == "Great lipstick."
    assert feature_hint("The color lasts all day.") == "color"  # the first of the longest content words


def test_families_stage_writes_samples_and_names_and_refuses_empty_histories(amazon, tmp_path):  # noqa: F811
    from recpipe.p5.families import families
    from recpipe.params.p5 import P5Params

    inter, items, users = amazon
    (tmp_path / "tables").mkdir()
    (tmp_path / "text").mkdir()
    items.write_parquet(tmp_path / "text" / "items.parquet")
    users.write_parquet(tmp_path / "text" / "users.parquet")
    inter.write_parquet(tmp_path / "tables" / "interactions.parquet")
    p5 = P5Params(negatives=10, indexing="random")
    samples = families(
        tmp_path / "tables",
        tmp_path / "text",
        tmp_path / "out",
        "amazon-x",
        p5,
        0,
        5,
        item_names(items, inter, "random", 0),
    )
    names = pl.read_parquet(tmp_path / "out" / "names.parquet")
    assert names.height == items.height and names["name"].str.contains(r"^\d+$").all()  # ids as written
    assert pl.read_parquet(tmp_path / "out" / "samples.parquet").equals(samples)
    # Every user with a single rating: no history to learn a next item from.
    inter.group_by("user_id").head(1).write_parquet(tmp_path / "tables" / "interactions.parquet")
    with pytest.raises(
        RecpipeError, match="families: sequential has no .* samples on amazon-x: .* histories are too short"
    ):
        families(
            tmp_path / "tables",
            tmp_path / "text",
            tmp_path / "out2",
            "amazon-x",
            P5Params(families=["sequential"], negatives=10),
            0,
            5,
            item_names(items, inter, "names", 0),
        )
    assert not (tmp_path / "out2").exists()


def test_history_spans_mark_each_history_item_of_train_prompts(amazon):
    samples = make(amazon, ["rating", "sequential", "direct"], history_targets=True)
    names = item_names(amazon[1], amazon[0], "names", 0)
    train = samples.filter(pl.col("split") == "train")
    assert train.filter(pl.col("family") == "sequential")["spans"].list.len().sum() > 0
    assert train.filter(pl.col("family") == "rating")["spans"].list.len().sum() == 0  # no history in its prompts
    for row in train.filter(pl.col("family") != "rating").iter_rows(named=True):
        for start, end, item in row["spans"]:
            assert (
                row["prompt"][start:end] == " " + names[item]
            )  # the item's name as an answer writes it: after a space
    assert samples.filter(pl.col("split") != "train")["spans"].list.len().sum() == 0
    assert make(amazon, ["sequential"], history_targets=False)["spans"].list.len().sum() == 0


def test_sequential_stride_tiles_each_history_once(amazon):
    from collections import Counter

    from recpipe.p5.families import leave_one_out

    samples = make(amazon, ["sequential"], history_len=3, history_targets=True, sequential_stride=4)
    train = samples.filter(pl.col("split") == "train")
    learned = Counter(
        (row["user_id"], item)
        for row in train.iter_rows(named=True)
        for item in [s[2] for s in row["spans"]] + [row["item_id"]]
    )
    assert set(learned.values()) == {1}  # windows of 3 history items + the target, stride 4: no overlap
    loo = leave_one_out(amazon[0].filter(pl.col("rating").is_not_null())).filter(pl.col("split") == "train")
    every = set(loo.select("user_id", "item_id").iter_rows())
    firsts = set(loo.filter(pl.col("pos") == 0).select("user_id", "item_id").iter_rows())
    assert every - firsts <= set(learned) <= every  # only a user's very first item may go unlearned
    assert train.height < make(amazon, ["sequential"], history_len=3, history_targets=True)["split"].eq("train").sum()
