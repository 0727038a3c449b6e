"""P5-style task families: rating, sequential, explanation, review and direct recommendation
samples from a dataset's text tables, each rendered with seen and unseen prompt templates.

Splits. Sequential and direct: leave-one-out per user in chronological order (the last item is
test, the second-last valid, the rest train). Rating, explanation and review: by time over all
interactions (recpipe.data.splits.split, tie-aware). These are pools: the leak guard runs when
the test and validation cases are drawn from them (recpipe.p5.sample.p5_mixture), so that a (user,
item) pair a drawn case asks about is never a training target, in any family.

With `history_targets`, each prompt also records where its history items are (`spans`), so that
training can learn every history item from the ones before it, not only the one target: ten
item predictions from a sequential sample instead of one, for the same forward pass (the leak
guard also takes held-out pairs out of the spans). With `sequential_stride` = history_len + 1,
sequential training windows (history and target) tile each user's history, the last one ending
at the last training item, so an epoch learns every training interaction once.

Items are written as `names` says: their titles, or the ids of a `p5.indexing` (random, sequential
or collaborative, after OpenP5), made by recpipe.p5.indexing from training interactions only. Every
prompt, target and names.parquet writes an item the same way."""

from __future__ import annotations

import random
import re
from pathlib import Path

import polars as pl

from recpipe import RecpipeError, log
from recpipe.data.splits import leave_one_out, split
from recpipe.io import atomic_dir, read_parquet, write_parquet
from recpipe.params.p5 import FAMILY_NAMES, P5Params
from recpipe.templates import (
    ANSWER_SPACE,
    LIST_SEPARATOR,
    placeholders,
    read_template_file,
)

FAMILIES = FAMILY_NAMES  # rating, sequential, explanation, review, direct
NEEDS_REVIEWS = {"explanation", "review"}
# What a family's prompts must mention, or the task cannot be solved from the prompt.
NEEDED_IN_PROMPT = {
    "rating": {"user", "item"},
    "sequential": {"history"},
    "explanation": {"user", "item"},
    "review": {"review"},
    "direct": {"user"},
}
# What a template's target asks the model to write decides how it is scored (recpipe.p5.evaluate).
KINDS = {"{rating}": "rating", "{answer}": "yes_no", "{item}": "item", "{summary}": "text", "{explanation}": "text"}
# Rating, explanation and review samples: the train, valid and test shares of all interactions by time.
FRACTIONS = (0.8, 0.1, 0.1)
# An item list in a prompt must follow a space and be followed by whitespace (recpipe.templates.in_text).
_LIST_START = re.compile(r"(?<! )\{(history|candidates)\}")
_LIST_END = re.compile(r"\{(history|candidates)\}(?!\s)")
_STOP = set(
    "the a an and or but of to in on for with this that these those it its is was are were be been very my i me you your they them just so too".split()
)


def supported(interactions: pl.DataFrame) -> set[str]:
    """The families a dataset can feed: those needing review text only where reviews exist."""
    has_reviews = "review" in interactions.columns and interactions["review"].drop_nulls().len() > 0
    return set(FAMILIES) if has_reviews else set(FAMILIES) - NEEDS_REVIEWS


def choose(asked: list[str] | None, interactions: pl.DataFrame, dataset: str) -> list[str]:
    """asked=None: every family the dataset supports (the rest skipped with a message). An explicit
    list naming a family the dataset cannot feed is an error."""
    can = supported(interactions)
    if asked is None:
        skipped = [f for f in FAMILIES if f not in can]
        if skipped:
            log.info("families: %s skipped: %s has no review text", ", ".join(skipped), dataset)
        return [f for f in FAMILIES if f in can]
    unknown = [f for f in asked if f not in FAMILIES]
    if unknown:
        raise RecpipeError(f"families: unknown families {unknown} (known: {list(FAMILIES)})")
    missing = [f for f in asked if f not in can]
    if missing:
        raise RecpipeError(f"families: {missing} need review text, which dataset {dataset!r} does not have")
    return list(asked)


def load_templates(name_or_path: str, families: list[str]) -> dict:
    """The templates file, checked: each asked family has seen and unseen templates, every
    placeholder is one recpipe fills, prompts end without a space (the answer brings its own) and
    item lists follow a space and are followed by whitespace (recpipe.templates.in_text)."""
    path, data = read_template_file(name_or_path)
    known = {
        "user",
        "profile",
        "item",
        "history",
        "rating",
        "max_rating",
        "candidates",
        "review",
        "summary",
        "explanation",
        "hint",
        "answer",
    }
    for family in families:
        for kind in ("seen", "unseen"):
            templates = (data.get(family) or {}).get(kind)
            if not templates:
                raise RecpipeError(f"{path}: family {family!r} has no {kind!r} templates")
            for i, t in enumerate(templates):
                for key in ("prompt", "target"):
                    if key not in t:
                        raise RecpipeError(f"{path}: {family}.{kind}[{i}] lacks {key!r}")
                    odd = placeholders(t[key], f"{path}: {family}.{kind}[{i}].{key}") - known
                    if odd:
                        raise RecpipeError(f"{path}: {family}.{kind}[{i}].{key} has unknown placeholders {sorted(odd)}")
                if t["target"].strip() not in KINDS:
                    raise RecpipeError(
                        f"{path}: {family}.{kind}[{i}].target must be one of {sorted(KINDS)}, got {t['target']!r}"
                    )
                prompt = t["prompt"]
                if prompt != prompt.rstrip():
                    raise RecpipeError(
                        f"{path}: {family}.{kind}[{i}].prompt ends with a space or line break: the answer is written after one space of its own"
                    )
                if _LIST_START.search(prompt) or _LIST_END.search(prompt):
                    raise RecpipeError(
                        f"{path}: {family}.{kind}[{i}].prompt: {{history}} and {{candidates}} must follow a space and be followed by a space or a "
                        "line break, so that each item name is tokenized as it is written as an answer"
                    )
                needed = NEEDED_IN_PROMPT[family] | (
                    {"candidates"} if family == "direct" and t["target"].strip() == "{item}" else set()
                )
                lacking = needed - placeholders(t["prompt"])
                if lacking:
                    raise RecpipeError(f"{path}: {family}.{kind}[{i}].prompt lacks the placeholders {sorted(lacking)}")
    return data


def render(template: str, fields: dict, history: list[tuple[int, str]] | None) -> tuple[str, list[list[int]]]:
    """The prompt, and [start, end, item_id] for each history item in it (wherever {history}
    appears): the item's name with the space before it, the text an answer naming the item is
    (recpipe.templates.in_text). `history`: (item_id, name) pairs, which fields["history"] joins."""
    if not history or "{history}" not in template:
        return template.format(**fields), []
    pieces = template.format(**{**fields, "history": "\x00"}).split("\x00")
    text, spans = pieces[0], []
    for piece in pieces[1:]:
        for j, (item_id, name) in enumerate(history):
            text += LIST_SEPARATOR if j else ""
            if not text.endswith(ANSWER_SPACE):
                raise RecpipeError(f"template {template!r}: {{history}} must follow a space")
            spans.append([len(text) - len(ANSWER_SPACE), len(text) + len(name), item_id])
            text += name
        text += piece
    return text, spans


def first_sentence(text: str | None, max_words: int = 30) -> str | None:
    if not text:
        return None
    sentence = re.split(r"(?<=[.!?])\s+", text.strip())[0]
    return " ".join(sentence.split()[:max_words]) or None


def feature_hint(sentence: str) -> str:
    """A content word of the explanation (its longest non-stopword), standing in for P5's feature."""
    words = [w.strip(".,!?;:\"'()").lower() for w in sentence.split()]
    words = [w for w in words if w.isalpha() and w not in _STOP]
    return max(words, key=len) if words else sentence.split()[0]


def asked_pairs(interactions: pl.DataFrame) -> pl.DataFrame:
    """Every (user_id, item_id) any family can validate or test on: the leave-one-out valid and
    test items and the valid and test part of the time split (the pools that cases are drawn from,
    so whichever cases are drawn, none is outside this set)."""
    inter = interactions.filter(pl.col("rating").is_not_null())
    held = [
        t.filter(pl.col("split") != "train").select("user_id", "item_id")
        for t in (leave_one_out(inter), split(inter, "temporal", None, FRACTIONS))
    ]
    return pl.concat(held).unique().sort("user_id", "item_id")


YES, NO = "yes", "no"  # a yes/no template's answers; scoring asks for the same words


def rating_text(r: float) -> str:
    """A rating as prompts and targets write it (4.0 -> "4"); rating scoring asks for the same text."""
    return f"{r:g}"


def build(
    interactions: pl.DataFrame,
    names: dict[int, str],
    users: pl.DataFrame,
    templates: dict,
    families: list[str],
    p5: P5Params,
    *,
    seed: int,
    max_rating: float,
) -> pl.DataFrame:
    """Every family's samples: case_id, family, template, seen, kind (KINDS), split, user_id, item_id,
    prompt, target, candidates (direct), rating, spans (history_targets: [start, end, item_id] of
    each history item in train prompts; empty otherwise). Deterministic for a seed. No leak guard
    yet: that is recpipe.p5.sample.p5_mixture's, once it knows which cases are asked. `p5` gives
    history_len, negatives, like_threshold, direct_train_share, history_targets and
    sequential_stride; names: each item as prompts write it (recpipe.p5.indexing.item_names);
    max_rating is the dataset's (its rating prompts name the scale)."""
    rng = random.Random(seed)
    profiles = dict(zip(users["user_id"].to_list(), users["text"].to_list()))
    all_items = sorted(names)
    inter = interactions.filter(pl.col("rating").is_not_null())
    loo = leave_one_out(inter)
    by_time = split(inter, "temporal", None, FRACTIONS)

    rows: list[dict] = []
    cases = iter(range(1 << 62))  # one id per emitted case, shared by its seen and unseen rows

    def emit(
        family: str,
        split: str,
        row: dict,
        fields: dict,
        candidates: list[int] | None = None,
        history: list[int] | None = None,
    ) -> None:
        # Train and valid samples use one seen template each; test samples are written once with a
        # seen and once with an unseen template, to be scored apart.
        kinds = [("seen", True)] if split != "test" else [("seen", True), ("unseen", False)]
        case = next(cases)
        for kind, seen in kinds:
            options = templates[family][kind]
            k = rng.randrange(len(options))
            t, item_id, f = options[k], row["item_id"], fields
            if family == "direct" and "{answer}" in t["target"] and rng.random() < 0.5:
                item_id = next(i for i in candidates if i != row["item_id"])  # a negative: the answer is no
                f = {**fields, "item": names[item_id], "answer": "no"}
            prompt, spans = render(
                t["prompt"],
                f,
                [(i, names[i]) for i in history] if history and p5.history_targets and split == "train" else None,
            )
            rows.append(
                {
                    "case_id": case,
                    "family": family,
                    "template": f"{family}/{kind}/{k}",
                    "seen": seen,
                    "kind": KINDS[t["target"].strip()],
                    "split": split,
                    "user_id": row["user_id"],
                    "item_id": item_id,
                    "rating": row.get("rating"),
                    "prompt": prompt,
                    "target": t["target"].format(**f),
                    "candidates": candidates,
                    "spans": spans,
                }
            )

    def base_fields(row: dict) -> dict:
        liked = row["rating"] is not None and row["rating"] > p5.like_threshold
        return {
            "user": f"user_{row['user_id']}",
            "profile": (profiles.get(row["user_id"]) or "").rstrip(".").lower() + ".",
            "item": names[row["item_id"]],
            "rating": rating_text(row["rating"]),
            "max_rating": rating_text(max_rating),
            "answer": YES if liked else NO,
            "history": "",
            "candidates": "",
            "review": "",
            "summary": "",
            "explanation": "",
            "hint": "",
        }

    if "rating" in families:
        for row in by_time.iter_rows(named=True):
            emit("rating", row["split"], row, base_fields(row))
    if "sequential" in families or "direct" in families:
        seqs = {u: items_ for u, items_ in loo.group_by("user_id", maintain_order=True).agg("item_id").iter_rows()}
        unseen: dict[int, list[int]] = {}
        for row in loo.filter(pl.col("pos") >= 1).iter_rows(named=True):
            history = seqs[row["user_id"]][max(0, row["pos"] - p5.history_len) : row["pos"]]
            fields = {**base_fields(row), "history": LIST_SEPARATOR.join(names[i] for i in history)}
            if "sequential" in families and (
                row["split"] != "train" or (row["n"] - 3 - row["pos"]) % p5.sequential_stride == 0
            ):
                emit("sequential", row["split"], row, fields, history=history)
            # Direct samples carry 100 candidates: every valid and test case, a share of train.
            if "direct" in families and (row["split"] != "train" or rng.random() < p5.direct_train_share):
                if row["user_id"] not in unseen:  # a user's negatives pool, built once per user
                    seen_items = set(seqs[row["user_id"]])
                    unseen[row["user_id"]] = [i for i in all_items if i not in seen_items]
                pool = unseen[row["user_id"]]
                if len(pool) < p5.negatives:
                    raise RecpipeError(
                        f"families: user {row['user_id']} has only {len(pool)} unseen items for {p5.negatives} negatives"
                    )
                candidates = rng.sample(pool, p5.negatives) + [row["item_id"]]
                rng.shuffle(candidates)
                emit(
                    "direct",
                    row["split"],
                    row,
                    {**fields, "candidates": LIST_SEPARATOR.join(names[i] for i in candidates), "answer": YES},
                    candidates,
                    history,
                )
    if NEEDS_REVIEWS & set(families):
        for row in by_time.filter(pl.col("review").is_not_null()).iter_rows(named=True):
            fields = base_fields(row)
            sentence = first_sentence(row["review"])
            if "explanation" in families and sentence:
                emit(
                    "explanation",
                    row["split"],
                    row,
                    {**fields, "explanation": sentence, "hint": feature_hint(sentence)},
                )
            if "review" in families and row.get("summary"):
                emit("review", row["split"], row, {**fields, "review": row["review"], "summary": row["summary"]})
    out = pl.DataFrame(
        rows,
        schema={
            "case_id": pl.Int64,
            "family": pl.String,
            "template": pl.String,
            "seen": pl.Boolean,
            "kind": pl.String,
            "split": pl.String,
            "user_id": pl.Int64,
            "item_id": pl.Int64,
            "rating": pl.Float64,
            "prompt": pl.String,
            "target": pl.String,
            "candidates": pl.List(pl.Int64),
            "spans": pl.List(pl.List(pl.Int64)),
        },
    )
    return out


def families(
    tables_dir: str | Path,
    text_dir: str | Path,
    out_dir: str | Path,
    dataset: str,
    p5: P5Params,
    seed: int,
    max_rating: float,
    names: dict[int, str],
) -> pl.DataFrame:
    """The families stage: samples.parquet (every family's samples) and names.parquet (each item
    as the prompts write it, `names`, which decoding and scoring need)."""
    interactions = read_parquet(Path(tables_dir) / "interactions.parquet", "ingest")
    users = read_parquet(Path(text_dir) / "users.parquet", "textualize")
    chosen = choose(list(p5.families) if p5.families is not None else None, interactions, dataset)
    samples = build(
        interactions, names, users, load_templates(p5.templates, chosen), chosen, p5, seed=seed, max_rating=max_rating
    )
    for family in chosen:
        split_names = set(samples.filter(pl.col("family") == family)["split"])
        if not {"train", "test"} <= split_names:
            raise RecpipeError(
                f"families: {family} has no {'train' if 'train' not in split_names else 'test'} samples on {dataset}: "
                "its users' histories are too short (leave-one-out needs 3+ rated items per user)"
            )
    with atomic_dir(out_dir) as tmp:
        write_parquet(samples, tmp / "samples.parquet")
        write_parquet(
            pl.DataFrame(
                {"item_id": list(names), "name": list(names.values())}, schema={"item_id": pl.Int64, "name": pl.String}
            ),
            tmp / "names.parquet",
        )
    counts = samples.group_by("family", "split").len().sort("family", "split")
    for family, split_name, n in counts.iter_rows():
        log.info("families: %s %s: %d samples", family, split_name, n)
    return samples
