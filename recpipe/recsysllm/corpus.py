"""RecSysLLM's pretraining texts: each user's features and a behaviour sequence drawn from their
long-, medium- and short-term history, with every entity's character span.

The windows are measured back from the user's last event: short-term is the last `short_days`,
medium-term up to `medium_days`, long-term anything older. The defaults (7 and 90 days) follow the
paper's "days or hours", "weeks or months" and "months or years". On MovieLens-100K, collected
over seven months, 65% of the ratings lie in their user's last week and 12% of users have a rating
older than 90 days; an Amazon category spans years, so there every window is filled. A window
holding fewer events than its share gets all of them, and the rest of the sequence is drawn from
the events not taken yet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import polars as pl

from recpipe import RecpipeError
from recpipe.templates import LIST_SEPARATOR, render

DAY = 86_400
MODES = ("temporal", "uniform", "recent")


@dataclass(frozen=True)
class BehaviourSampling:
    """mode: temporal (the paper's windows), uniform (any events), recent (the last ones);
    length: events per sequence; shares: long, medium and short-term shares of a sequence."""

    mode: str = "temporal"
    length: int = 20
    shares: tuple[float, float, float] = (0.1, 0.3, 0.6)
    short_days: float = 7
    medium_days: float = 90

    def __post_init__(self):
        if self.mode not in MODES:
            raise RecpipeError(f"recsysllm.sampling.mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.length < 1:
            raise RecpipeError(f"recsysllm.sampling.length: must be at least 1, got {self.length}")
        if len(self.shares) != 3 or min(self.shares) < 0 or abs(sum(self.shares) - 1) > 1e-6:
            raise RecpipeError(
                f"recsysllm.sampling.shares: three shares (long, medium, short) >= 0 summing to 1, got {list(self.shares)}"
            )
        if not 0 < self.short_days < self.medium_days:
            raise RecpipeError(
                f"recsysllm.sampling: short_days ({self.short_days}) must be > 0 and below medium_days ({self.medium_days})"
            )


def quotas(n: int, shares: tuple[float, ...]) -> list[int]:
    """n split by shares, rounded so that the parts sum to n (largest remainders first)."""
    exact = [n * s for s in shares]
    out = [int(x) for x in exact]
    for i in sorted(range(len(shares)), key=lambda i: exact[i] - out[i], reverse=True)[: n - sum(out)]:
        out[i] += 1
    return out


def sample_behaviour(timestamps: list[int], config: BehaviourSampling, rng: random.Random) -> list[int]:
    """Positions (in chronological order) of the events drawn from one user's history, given its
    timestamps in chronological order."""
    n = min(config.length, len(timestamps))
    if config.mode == "recent" or n == len(timestamps):
        return list(range(len(timestamps) - n, len(timestamps)))
    if config.mode == "uniform":
        return sorted(rng.sample(range(len(timestamps)), n))
    last = timestamps[-1]
    windows: list[list[int]] = [[], [], []]  # long, medium, short
    for i, t in enumerate(timestamps):
        age = last - t
        windows[2 if age <= config.short_days * DAY else 1 if age <= config.medium_days * DAY else 0].append(i)
    chosen: list[int] = []
    for window, quota in zip(windows, quotas(n, config.shares)):
        chosen += rng.sample(window, min(quota, len(window)))
    rest = sorted(set(range(len(timestamps))) - set(chosen))
    chosen += rng.sample(rest, n - len(chosen))
    return sorted(chosen)


def documents(
    users: pl.DataFrame,
    items: pl.DataFrame,
    histories: pl.DataFrame,
    held_out: pl.DataFrame,
    config: BehaviourSampling,
    seed: int,
) -> pl.DataFrame:
    """One pretraining text per user: their own text, then the sampled behaviour sequence by name,
    oldest first; spans of the user's entities and of each item name. `held_out`: the (user_id,
    item_id) pairs any task validates or tests on, which never enter a text."""
    names = dict(items.select("item_id", "name").iter_rows())
    user_rows = {u: (text, spans) for u, text, spans in users.select("user_id", "text", "spans").iter_rows()}
    hidden = set(held_out.select("user_id", "item_id").iter_rows())
    rows = []
    for user, item_ids, timestamps in histories.select("user_id", "item_id", "timestamp").iter_rows():
        kept = [(i, t) for i, t in zip(item_ids, timestamps) if (user, i) not in hidden]
        if not kept or user not in user_rows:
            continue
        rng = random.Random(f"{seed}:{user}")
        picked = [kept[p][0] for p in sample_behaviour([t for _, t in kept], config, rng)]
        text, spans = user_rows[user]
        body, item_spans = render(
            " Watched, oldest first: {history}.", {"history": [names[i] for i in picked]}, sep=LIST_SEPARATOR
        )
        shift = len(text)
        spans = [
            *spans,
            *({**s, "entity": "item", "start": s["start"] + shift, "end": s["end"] + shift} for s in item_spans),
        ]
        rows.append({"user_id": user, "text": text + body, "spans": spans})
    return pl.DataFrame(
        rows,
        schema={
            "user_id": pl.Int64,
            "text": pl.String,
            "spans": pl.List(pl.Struct({"entity": pl.String, "start": pl.Int64, "end": pl.Int64})),
        },
    )
