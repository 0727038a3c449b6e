"""recpipe's one chronological order (timestamp, then position in the source file) and the splits
built on it, on a handmade log whose same-second ratings are in a different order than their item
ids. The expected orders and splits are written out by hand."""

import polars as pl
import pytest

from recpipe import RecpipeError
from recpipe.data.splits import leave_one_out, loo_histories, split, user_histories
from recpipe.tallrec.instructions import candidate_samples

# (user, item, rating, timestamp) in source-file order; `row` is that order.
LOG = [
    (1, 10, 5.0, 100),  # row 0
    (2, 11, 2.0, 100),  # row 1
    (1, 15, 4.0, 200),  # row 2: three same-second ratings of user 1, item ids out of order
    (1, 12, 1.0, 200),  # row 3
    (2, 16, 5.0, 150),  # row 4
    (1, 13, 5.0, 200),  # row 5
    (2, 14, 4.0, 150),  # row 6: a same-second tie for user 2
]


def log() -> pl.DataFrame:
    return (
        pl.DataFrame(
            LOG,
            schema={"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64},
            orient="row",
        )
        .with_row_index("row")
        .with_columns(pl.col("row").cast(pl.Int64))
    )


def test_histories_keep_same_second_ratings_in_file_order():
    hist = user_histories(log())
    assert hist["user_id"].to_list() == [1, 2]
    assert hist["item_id"].to_list() == [[10, 15, 12, 13], [11, 16, 14]]  # not [10, 12, 13, 15]
    assert hist["file_order"].to_list() == [0, 1]


def test_leave_one_out_tests_the_last_rating_in_file_order():
    loo = leave_one_out(log())
    got = {(u, i): s for u, i, s in loo.select("user_id", "item_id", "split").iter_rows()}
    assert got == {
        (1, 10): "train",
        (1, 15): "train",
        (1, 12): "valid",
        (1, 13): "test",
        (2, 11): "train",
        (2, 16): "valid",
        (2, 14): "test",
    }
    history, target = loo_histories(log())
    assert target == {1: 13, 2: 14} and history == {1: [10, 15, 12], 2: [11, 16]}
    history, target = loo_histories(log(), "valid")  # the one before: its history stops before it
    assert target == {1: 12, 2: 16} and history == {1: [10, 15], 2: [11]}
    with pytest.raises(RecpipeError, match="held-out split 'train'"):
        loo_histories(log(), "train")


def test_paper_split_is_tallrecs_user_order_then_time():
    samples = candidate_samples(user_histories(log()), history_len=1, like_threshold=3)
    out = split(samples, "paper", None, (0.6, 0.2, 0.2))
    # Users by first appearance (1, then 2), each in time order with ties in file order; the cuts
    # are int(5 * 0.6) = 3 and int(5 * 0.8) = 4.
    assert out.select("user_id", "item_id", "split").rows() == [
        (1, 15, "train"),
        (1, 12, "train"),
        (1, 13, "train"),
        (2, 16, "valid"),
        (2, 14, "test"),
    ]
    assert out["history_item_ids"].to_list() == [[10], [15], [12], [11], [16]]
    assert out["history_liked"].to_list() == [[True], [True], [False], [False], [True]]
    assert out["label"].to_list() == [1, 0, 1, 1, 1]


def test_temporal_split_orders_by_time_then_file_row():
    samples = candidate_samples(user_histories(log()), history_len=1, like_threshold=3)
    # Time order: t150 rows 4, 6; t200 rows 2, 3, 5. Cuts at int(5 * 0.2) = 1 and int(5 * 0.4) = 2;
    # the first falls inside the t150 run, so it moves to the run's end: no validation sample
    # shares a second with a training one. Both cuts then sit at 2: validation is empty.
    with pytest.raises(
        RecpipeError, match=r"'temporal': valid is empty: 2 of the 5 pooled samples share one timestamp"
    ):
        split(samples, "temporal", None, (0.2, 0.2, 0.6))
    # Cuts at 2 and 3: the second falls inside the t200 run and moves to its end, leaving no test.
    with pytest.raises(RecpipeError, match=r"test is empty: 3 of the 5 pooled samples share one timestamp"):
        split(samples, "temporal", None, (0.4, 0.2, 0.4))
    ordered = split(samples, "temporal", None, (0.2, 0.2, 0.6), check=False)
    assert ordered.select("item_id", "split").rows() == [
        (16, "train"),
        (14, "train"),
        (15, "test"),
        (12, "test"),
        (13, "test"),
    ]


def tallrec_reference(u_data: str, seq_len: int = 10, pool: int = 10_000) -> list[tuple]:
    """TALLRec's movie preprocessing restated in plain Python, as its published script does it: users
    in order of first appearance in u.data, each user's ratings sorted by timestamp with a stable
    sort (ties keep file order), every position from seq_len on a sample of the seq_len before it,
    the last `pool` samples cut at int(n * 0.8) and int(n * 0.9)."""
    per_user: dict[str, list] = {}
    for line in u_data.splitlines():
        user, item, rating, stamp = line.split("\t")
        per_user.setdefault(user, []).append((int(item), int(int(rating) > 3), int(stamp)))
    samples = []
    for user, events in per_user.items():
        events = sorted(events, key=lambda e: e[2])
        for i in range(seq_len, len(events)):
            samples.append((int(user), [e[0] for e in events[i - seq_len : i]], events[i][0], events[i][1]))
    samples = samples[-pool:]
    n = len(samples)
    names = ["train"] * int(n * 0.8) + ["valid"] * (int(n * 0.9) - int(n * 0.8)) + ["test"] * (n - int(n * 0.9))
    return [(*s, split) for s, split in zip(samples, names)]


def test_paper_split_equals_tallrecs_preprocessing_sample_for_sample(archives, tmp_path):
    """On a shuffled ratings file with many same-second ties: the same users, histories (so the same
    liked and disliked lists, in order), targets, labels and splits, in the same order."""
    import zipfile

    from test_text_instructions_sample import run_data_stages

    u_data = zipfile.ZipFile(archives["grouplens"]).read("ml-100k/u.data").decode()
    expected = tallrec_reference(u_data, seq_len=10, pool=300)
    ours = run_data_stages(
        archives["atomic"], tmp_path, instructions={"split": "paper", "history_len": 10, "pool_size": 300}
    )
    got = [
        (u, h, i, label, s)
        for u, h, i, label, s in ours.select("user_id", "history_item_ids", "item_id", "label", "split").iter_rows()
    ]
    assert len(expected) == 300 and got == expected


def test_a_temporal_split_left_empty_by_tied_timestamps_says_so():
    """A log whose last ratings share one second: the cuts cannot fall inside that run, so valid
    and test would be empty; one line says why and what to change."""
    samples = pl.DataFrame(
        {
            "timestamp": [1, 2] + [9] * 18,
            "row": list(range(20)),
            "user_id": list(range(20)),
            "item_id": list(range(20)),
            "file_order": list(range(20)),
            "pos": [0] * 20,
        }
    )
    with pytest.raises(RecpipeError, match=r"valid and test are empty: 18 of the 20 pooled samples share one"):
        split(samples, "temporal", None, (0.8, 0.1, 0.1))
    assert split(samples, "paper", None, (0.8, 0.1, 0.1))["split"].to_list().count("test") == 2
