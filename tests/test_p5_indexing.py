"""OpenP5's item indexings (p5.indexing): made from training interactions only, sequential ids in
order of first appearance, collaborative ids a cluster hierarchy that follows co-occurrence."""

import random
from collections import Counter
from itertools import combinations, pairwise

import polars as pl
import pytest

from conftest import params_dict, source
from recpipe import RecpipeError
from recpipe.p5.indexing import (
    INDEXINGS,
    collaborative_paths,
    item_names,
    training_histories,
)
from recpipe.params import schema as params
from recpipe.params.p5 import P5Params

GROUPS, PER_GROUP = 4, 12  # the planted fixture: 4 groups of 12 items that users take from one group


def log(events: list[tuple[int, int, int]]) -> pl.DataFrame:
    """Interactions from (user, item, timestamp); rows numbered as given."""
    return pl.DataFrame(
        [(u, i, 4.0, t, r) for r, (u, i, t) in enumerate(events)],
        schema={"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64, "row": pl.Int64},
        orient="row",
    )


def catalog(ids) -> pl.DataFrame:
    return pl.DataFrame({"item_id": sorted(ids), "name": [f"Item {i}" for i in sorted(ids)]})


@pytest.fixture(scope="module")
def planted():
    """120 users, each taking 8 items of their group in time order and now and then one item of
    another group: items of a group co-occur, items of different groups hardly."""
    rng = random.Random(7)
    events, t = [], 0
    for user in range(1, 121):
        group = user % GROUPS
        mine = rng.sample(range(group * PER_GROUP + 1, (group + 1) * PER_GROUP + 1), 8)
        if rng.random() < 0.3:
            mine.insert(
                rng.randrange(len(mine)),
                rng.choice([i for i in range(1, GROUPS * PER_GROUP + 1) if (i - 1) // PER_GROUP != group]),
            )
        for item in mine:
            t += 1
            events.append((user, item, t))
    rng.shuffle(events)  # row order is not time order: the indexings must sort by time
    return log(events), catalog(range(1, GROUPS * PER_GROUP + 1))


def group_of(item: int) -> int:
    return (item - 1) // PER_GROUP


def test_sequential_ids_follow_first_appearance_in_training_histories():
    # User 2's events come first in time, but histories are read user by user, in user id order.
    # Each user's last two items (valid and test) never number an item.
    events = [
        (1, 30, 10),
        (1, 10, 11),
        (1, 20, 12),
        (1, 40, 13),
        (1, 50, 14),
        (2, 20, 1),
        (2, 60, 2),
        (2, 10, 3),
        (2, 70, 4),
        (2, 80, 5),
    ]
    inter, items = log(events[::-1]), catalog([10, 20, 30, 40, 50, 60, 70, 80, 90])
    assert training_histories(inter) == {1: [30, 10, 20], 2: [20, 60, 10]}
    names = item_names(items, inter, "sequential", 0)
    # First appearances 30, 10, 20, 60; then the items no training history holds, in id order.
    assert names == {
        30: "1000",
        10: "1001",
        20: "1002",
        60: "1003",
        40: "1004",
        50: "1005",
        70: "1006",
        80: "1007",
        90: "1008",
    }


def test_random_ids_are_todays_seeded_permutation():
    inter, items = log([(1, i, i) for i in range(1, 30)]), catalog(range(1, 30))
    perm = list(range(1, 30))
    random.Random("item-ids-5").shuffle(perm)
    assert item_names(items, inter, "random", 5) == {item: str(1000 + rank) for rank, item in enumerate(perm)}
    assert item_names(items, inter, "names", 5) == {i: f"Item {i}" for i in range(1, 30)}


def test_collaborative_ids_are_unique_deterministic_and_respect_the_cluster_size(planted):
    inter, items = planted
    n = 4
    names = item_names(items, inter, "collaborative", 0, clusters=n)
    assert names == item_names(items, inter, "collaborative", 0, clusters=n)
    assert len(set(names.values())) == len(names) == items.height
    paths = {item: tuple(int(w.removeprefix("c")) for w in name.split()) for item, name in names.items()}
    assert all(name == " ".join(f"c{k}" for k in paths[item]) for item, name in names.items())
    assert all(0 <= k < n for path in paths.values() for k in path)
    leaves = Counter(path[:-1] for path in paths.values())
    assert max(leaves.values()) <= n  # a leaf cluster holds at most n items
    # A cluster is split only when it holds more than n items, and then into at least two.
    for prefix in {path[:d] for path in paths.values() for d in range(len(path) - 1)}:
        under = [p for p in paths.values() if p[: len(prefix)] == prefix]
        assert len(under) > n and len({p[len(prefix)] for p in under}) >= 2


def test_collaborative_ids_put_co_occurring_items_under_one_prefix(planted):
    inter, items = planted
    paths = collaborative_paths(training_histories(inter), items["item_id"].to_list(), GROUPS, 0)
    same, other = [], []
    for a, b in combinations(sorted(paths), 2):
        (same if group_of(a) == group_of(b) else other).append(paths[a][0] == paths[b][0])
    # Random top-level clusters would share a first token about 1 time in 4 either way.
    assert sum(same) / len(same) > 0.9 and sum(other) / len(other) < 0.1


def test_moving_test_and_valid_targets_changes_no_index(planted):
    inter, items = planted
    loo = inter.sort("user_id", "timestamp", "row").with_columns(back=pl.int_range(pl.len()).reverse().over("user_id"))
    # Each user's valid and test item (the last two) swapped for items of another group.
    moved = loo.with_columns(
        item_id=pl.when(pl.col("back") < 2)
        .then((pl.col("item_id") + PER_GROUP - 1) % (GROUPS * PER_GROUP) + 1)
        .otherwise("item_id")
    )
    moved = moved.drop("back")
    assert not moved.sort("row").equals(inter.sort("row"))
    for indexing in INDEXINGS:
        assert item_names(items, moved, indexing, 0, clusters=GROUPS) == item_names(
            items, inter, indexing, 0, clusters=GROUPS
        ), indexing
    # The check can fail: moving one training item does renumber.
    first = loo.filter(pl.col("back") == 2).row(0, named=True)
    touched = loo.with_columns(
        item_id=pl.when(pl.col("row") == first["row"])
        .then(first["item_id"] % (GROUPS * PER_GROUP) + 1)
        .otherwise("item_id")
    ).drop("back")
    assert item_names(items, touched, "sequential", 0) != item_names(items, inter, "sequential", 0)


def test_families_stage_writes_identical_bytes_for_a_seed(planted, tmp_path):
    from recpipe.p5.families import families

    inter, items = planted
    for d in ("tables", "text"):
        (tmp_path / d).mkdir()
    inter.write_parquet(tmp_path / "tables" / "interactions.parquet")
    items.write_parquet(tmp_path / "text" / "items.parquet")
    pl.DataFrame({"user_id": sorted(set(inter["user_id"])), "text": "A user."}).write_parquet(
        tmp_path / "text" / "users.parquet"
    )
    p5 = P5Params(families=["sequential"], indexing="collaborative", clusters=GROUPS)
    for out in ("a", "b"):  # the stage's own way: pipeline.families indexes, then writes
        families(
            tmp_path / "tables",
            tmp_path / "text",
            tmp_path / out,
            "planted",
            p5,
            3,
            5,
            item_names(items, inter, p5.indexing, 3, p5.clusters),
        )
    for name in ("names.parquet", "samples.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    written = dict(pl.read_parquet(tmp_path / "a" / "names.parquet").iter_rows())
    assert written == item_names(items, inter, "collaborative", 3, clusters=GROUPS)
    samples = pl.read_parquet(tmp_path / "a" / "samples.parquet")
    assert set(samples["target"]) <= set(written.values())  # targets are written as the index


def test_bad_indexing_is_one_line_naming_the_param(archives):
    data = params_dict([source("atomic", archives["atomic"])], p5={"indexing": "semantic"})
    with pytest.raises(RecpipeError) as e:
        params.parse(data)
    message = str(e.value)
    assert (
        "p5.indexing: Input should be 'names', 'random', 'sequential' or 'collaborative'" in message
        and "\n" not in message
    )
    with pytest.raises(
        RecpipeError, match=r"p5.item_ids: unknown key \(replaced by p5.indexing: names for false, random for true\)"
    ):
        params.parse(params_dict([source("atomic", archives["atomic"])], p5={"item_ids": True}))
    with pytest.raises(
        RecpipeError,
        match=r"p5.indexing: unknown indexing 'semantic' \(known: names, random, sequential, collaborative\)",
    ):
        item_names(catalog([1]), log([(1, 1, 1)]), "semantic", 0)


def test_sequential_ids_give_away_order_random_ids_do_not(planted):
    """P5's leak, which the README warns of: in training histories the next item's sequential id is
    often the previous one's plus one; with random ids almost never."""
    inter, items = planted
    histories = training_histories(inter)

    ids = {
        indexing: {i: int(n) for i, n in item_names(items, inter, indexing, 0).items()}
        for indexing in ("sequential", "random")
    }

    def plus_one(indexing: str) -> float:
        steps = [ids[indexing][b] - ids[indexing][a] for h in histories.values() for a, b in pairwise(h)]
        return steps.count(1) / len(steps)

    first = histories[min(histories)]
    assert [ids["sequential"][i] for i in first] == list(
        range(1000, 1000 + len(first))
    )  # the first user read: 1000, 1001, ...
    assert plus_one("sequential") > 3 * plus_one("random")  # and later users' histories often step by one
