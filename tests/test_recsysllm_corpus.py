"""RecSysLLM's pretraining texts: temporal behaviour sampling and held-out events."""

import random

import polars as pl
import pytest

from recpipe import RecpipeError
from recpipe.recsysllm.corpus import (
    DAY,
    BehaviourSampling,
    documents,
    quotas,
    sample_behaviour,
)

NOW = 1_000 * DAY


def history(long: int, medium: int, short: int) -> list[int]:
    """Timestamps, oldest first: `long` events 100-199 days before the last, `medium` 10-89 days, `short` within 6 days."""
    ts = [NOW - (199 - i) * DAY for i in range(long)]
    ts += [NOW - (89 - i) * DAY for i in range(medium)]
    ts += [NOW - (6 - i % 7) * DAY for i in range(short)]
    return sorted(ts)


def window_counts(ts: list[int], picked: list[int]) -> tuple[int, int, int]:
    ages = [(ts[-1] - ts[p]) / DAY for p in picked]
    return sum(a > 90 for a in ages), sum(7 < a <= 90 for a in ages), sum(a <= 7 for a in ages)


def test_temporal_sampling_takes_10_30_60_from_the_three_windows():
    ts = history(30, 30, 30)
    for seed in range(5):
        picked = sample_behaviour(ts, BehaviourSampling(length=20), random.Random(seed))
        assert picked == sorted(set(picked)) and len(picked) == 20
        assert window_counts(ts, picked) == (2, 6, 12)
    assert quotas(7, (0.1, 0.3, 0.6)) == [1, 2, 4]


def test_a_short_window_passes_its_share_on():
    ts = history(0, 40, 3)  # no long-term events, three short-term ones
    picked = sample_behaviour(ts, BehaviourSampling(length=20), random.Random(0))
    assert window_counts(ts, picked) == (0, 17, 3)
    assert sample_behaviour(ts[:5], BehaviourSampling(length=20), random.Random(0)) == list(range(5))


def test_uniform_and_recent_ablations_and_determinism():
    ts = history(30, 30, 30)
    recent = sample_behaviour(ts, BehaviourSampling(mode="recent", length=10), random.Random(0))
    assert recent == list(range(80, 90))
    uniform = [sample_behaviour(ts, BehaviourSampling(mode="uniform", length=20), random.Random(s)) for s in range(30)]
    assert (
        sum(window_counts(ts, p)[0] for p in uniform) / 30 > 4
    )  # a third of the events are long-term: about 6.7 of 20
    again = sample_behaviour(ts, BehaviourSampling(), random.Random(7))
    assert again == sample_behaviour(ts, BehaviourSampling(), random.Random(7))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "latest"}, "mode: 'latest' is not one of temporal, uniform, recent"),
        ({"shares": (0.5, 0.3, 0.3)}, "summing to 1"),
        ({"shares": (0.5, 0.5)}, "three shares"),
        ({"short_days": 100}, "below medium_days"),
        ({"length": 0}, "at least 1"),
    ],
)
def test_bad_sampling_settings_are_one_line(kwargs, message):
    with pytest.raises(RecpipeError, match=message):
        BehaviourSampling(**kwargs)


def test_documents_hold_no_held_out_event_and_span_every_name():
    users = pl.DataFrame(
        {
            "user_id": [1, 2],
            "text": ["A 24-year-old man.", "A 53-year-old woman."],
            "spans": [[{"entity": "age", "start": 2, "end": 4}], [{"entity": "age", "start": 2, "end": 4}]],
        }
    )
    items = pl.DataFrame({"item_id": list(range(10)), "name": [f"Movie {i} (199{i})" for i in range(10)]})
    ts = history(3, 3, 4)
    histories = pl.DataFrame(
        {"user_id": [1, 2], "item_id": [list(range(10)), list(range(9, -1, -1))], "timestamp": [ts, ts]}
    )
    held = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [8, 9, 0]})
    docs = documents(users, items, histories, held, BehaviourSampling(length=6), seed=0)
    assert docs["user_id"].to_list() == [1, 2]
    for user, text, spans in docs.iter_rows():
        names = [text[s["start"] : s["end"]] for s in spans if s["entity"] == "item"]
        assert len(names) == 6 and text.startswith(users.filter(pl.col("user_id") == user)["text"][0])
        held_names = {f"Movie {i} (199{i})" for u, i in held.iter_rows() if u == user}
        assert not held_names & set(names)
        order = [int(n.split()[1]) for n in names]
        assert order == (sorted(order) if user == 1 else sorted(order, reverse=True)), "oldest first"
    assert docs.equals(documents(users, items, histories, held, BehaviourSampling(length=6), seed=0))
    assert not docs.equals(documents(users, items, histories, held, BehaviourSampling(length=6), seed=1))


def test_infill_samples_of_the_corpus_are_seeded_per_user_and_name_a_bad_row():
    from recpipe.recsysllm.infill import InfillConfig, build_all
    from test_recsysllm_infill import word_tokenizer

    docs = pl.DataFrame(
        {
            "user_id": [1, 2],
            "text": ["a b c d e f", "b c d e f a"],
            "spans": [[{"entity": "x", "start": 0, "end": 3}], [{"entity": "x", "start": 2, "end": 5}]],
        }
    )
    tok, ids = word_tokenizer(list("abcdef"))
    both = build_all(docs, tok, ids, InfillConfig(ratio=0.3), seed=0, copies=2)
    assert len(both) == 4 and both == build_all(docs, tok, ids, InfillConfig(ratio=0.3), seed=0, copies=2)
    assert build_all(docs.tail(1), tok, ids, InfillConfig(ratio=0.3), seed=0, copies=2) == both[2:]
    bad = docs.with_columns(
        spans=pl.Series([[{"entity": "x", "start": 0, "end": 3}], [{"entity": "x", "start": 4, "end": 40}]])
    )
    with pytest.raises(
        RecpipeError,
        match=r"corpus row 1 \(user 2\): entity span \(4, 40\) does not lie inside its text of 11 characters",
    ):
        build_all(bad, tok, ids, InfillConfig(), seed=0)
