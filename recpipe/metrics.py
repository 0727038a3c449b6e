"""Every metric recpipe reports, as plain functions of predictions and targets: AUC and accuracy of
Yes/No scores, HR@k and NDCG@k of ranked lists, rating errors, yes/no answers, BLEU and ROUGE of
text, Wilson intervals of hit rates, the exact McNemar test of two methods on the same cases, and
paired bootstrap intervals of AUCs.
Imports no recpipe module: bad input is a ValueError."""

from __future__ import annotations

import math
import re
import string


def auc_metrics(labels: list[int], p_yes: list[float]) -> dict:
    from sklearn.metrics import accuracy_score, roc_auc_score

    predicted = [int(p >= 0.5) for p in p_yes]
    return {
        "auc": round(float(roc_auc_score(labels, p_yes)), 5) if len(set(labels)) == 2 else None,
        "accuracy": round(float(accuracy_score(labels, predicted)), 5),
        "predicted_positive_rate": round(sum(predicted) / len(predicted), 5),
        "label_positive_rate": round(sum(labels) / len(labels), 5),
        "n": len(labels),
    }


def hit_and_ndcg(ranked: list[list[int]], targets: list[int], ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """HR@k: the share of prompts whose target is in the top k. NDCG@k: 1/log2(rank + 1) of the
    target's 1-based rank when it is in the top k, else 0 (one relevant item per prompt)."""
    if len(ranked) != len(targets) or not targets:
        raise ValueError(f"{len(ranked)} ranked lists for {len(targets)} targets")
    out = {}
    for k in ks:
        hits, gains = 0, 0.0
        for items, target in zip(ranked, targets):
            top = items[:k]
            if target in top:
                hits += 1
                gains += 1 / math.log2(top.index(target) + 2)
        out[f"hr@{k}"] = round(hits / len(targets), 5)
        out[f"ndcg@{k}"] = round(gains / len(targets), 5)
    return out


def ranking_metrics(ranked: list[list[int]], targets: list[int], validity: list[float], ks: tuple[int, ...]) -> dict:
    """HR@k and NDCG@k (hit_and_ndcg) and the share of returned beams that named an
    item (every prompt returns the same number of beams, so the mean of the per-prompt shares)."""
    out = {name: round(value, 4) for name, value in hit_and_ndcg(ranked, targets, ks).items()}
    return out | {"validity": round(sum(validity) / len(validity), 4)}


_WORDS = {w: float(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
# The first number in the answer, written in digits or as a word ("4/5" and "4 out of 5" read 4).
_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?|-?\.\d+)|\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)


def first_number(text: str) -> float | None:
    """The first number in `text`, as it is written (no clamping); None if there is none."""
    match = _NUMBER.search(text or "")
    if not match:
        return None
    return float(match.group(1)) if match.group(1) else _WORDS[match.group(2).lower()]


def parse_rating(text: str, low: float, high: float) -> float | None:
    """The rating an answer gives: its first number ("5", "5.0", " 4 stars", "4/5", "Rating: 3.5",
    "five"), clamped to [low, high] as P5 clips its predictions; None when the answer holds no
    number. A clamped answer is still scored (rating_metrics counts how many were clamped)."""
    value = first_number(text)
    return None if value is None else min(max(value, low), high)


def rating_metrics(predictions: list[str], targets: list[float], low: float, high: float) -> dict:
    """RMSE and MAE over the answers that hold a number (clamped to [low, high]); answers without
    one are not dropped silently: `unparsable` counts them and `unparsable_rate` is their share of
    all answers. rmse and mae are None when no answer holds a number."""
    errors, unparsable, clamped = [], 0, 0
    for text, target in zip(predictions, targets, strict=True):
        raw = first_number(text)
        if raw is None:
            unparsable += 1
            continue
        clamped += not low <= raw <= high
        errors.append(parse_rating(text, low, high) - float(target))
    n = len(predictions)
    return {
        "rmse": round(math.sqrt(sum(e * e for e in errors) / len(errors)), 4) if errors else None,
        "mae": round(sum(abs(e) for e in errors) / len(errors), 4) if errors else None,
        "clamped": clamped,
        "unparsable": unparsable,
        "unparsable_rate": round(unparsable / n, 4) if n else None,
    }


def parse_yes_no(text: str) -> str | None:
    """ "yes" or "no" from the answer's first word (lowercased, punctuation stripped), else None."""
    words = (text or "").split()
    word = words[0].strip(string.punctuation).lower() if words else ""
    return word if word in ("yes", "no") else None


def yes_no_metrics(predictions: list[str], targets: list[str]) -> dict:
    """Accuracy over every answer: one that is neither yes nor no is wrong, and counted. A
    prediction may be the model's probability of yes (a number in [0, 1]; yes at 0.5 or more):
    when every one is, yes_no_auc ranks them too, as the TALLRec task does (None with one class)."""
    p_yes = [_probability(p) for p in predictions]
    scored = bool(p_yes) and None not in p_yes
    answers = [
        ("yes" if p >= 0.5 else "no") if scored else parse_yes_no(text)
        for p, text in zip(p_yes, predictions, strict=True)
    ]
    truth = [t.strip().lower() for t in targets]
    right = sum(a == t for a, t in zip(answers, truth, strict=True))
    unparsable = answers.count(None)
    n = len(answers)
    out = {
        "yes_no_accuracy": round(right / n, 4) if n else None,
        "yes_no_unparsable": unparsable,
        "yes_no_unparsable_rate": round(unparsable / n, 4) if n else None,
    }
    if scored:
        from sklearn.metrics import roc_auc_score

        labels = [int(t == "yes") for t in truth]
        out["yes_no_auc"] = round(float(roc_auc_score(labels, p_yes)), 4) if len(set(labels)) == 2 else None
    return out


def _probability(text: str) -> float | None:
    try:
        p = float(text)
    except (TypeError, ValueError):
        return None
    return p if 0 <= p <= 1 else None


def text_metrics(predictions: list[str], references: list[str]) -> dict:
    """Corpus BLEU-4 (sacrebleu, its default 13a tokenization) and the mean ROUGE-1/2/L F-measure
    (rouge-score, Porter-stemmed), all in percent."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    sums = dict.fromkeys(kinds, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)  # (target, prediction)
        for kind in kinds:
            sums[kind] += scores[kind].fmeasure
    n = max(len(predictions), 1)
    out = {"bleu": round(sacrebleu.corpus_bleu(predictions, [references]).score, 4)}
    return out | {kind: round(100 * sums[kind] / n, 4) for kind in kinds}


def hit_rate_interval(hr: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a hit rate measured on n cases (scipy's binomtest): on 100
    cases, HR@10 0.04 spans about 0.02-0.10, so small differences between rows are not results."""
    from scipy.stats import binomtest

    ci = binomtest(round(hr * n), n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """The exact McNemar test of two methods on the same cases: a two-sided binomial test on the
    cases only one of them gets right (1.0 when there are none)."""
    from scipy.stats import binomtest

    return float(binomtest(only_a, only_a + only_b).pvalue) if only_a + only_b else 1.0


def paired_bootstrap_auc(
    labels: list[int],
    scores: dict[str, list[float]],
    pairs: list[tuple[str, str]],
    rounds: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """AUCs of several scorers of the same samples, each with a percentile interval over the
    samples drawn with replacement, and for each (a, b) in `pairs` the difference AUC(a) - AUC(b)
    with its interval and a two-sided p-value (twice the share of draws on the smaller side of
    zero, counted with one more draw: 2 / 2001 is the smallest), every scorer on the same draws."""
    import numpy as np
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    if set(np.unique(y)) != {0, 1}:
        raise ValueError("paired_bootstrap_auc needs labels of both classes")
    draws = np.random.default_rng(seed).integers(0, len(y), size=(rounds, len(y)))
    yd = y[draws]
    pos = yd.sum(axis=1)
    valid = (pos > 0) & (pos < len(y))

    def aucs(s: np.ndarray) -> np.ndarray:  # Mann-Whitney: ties count one half
        ranks = rankdata(s[draws], axis=1)
        return ((ranks * yd).sum(axis=1) - pos * (pos + 1) / 2) / (pos * (len(y) - pos))

    tail = (1 - confidence) / 2
    per = {name: aucs(np.asarray(s, dtype=float))[valid] for name, s in scores.items()}
    whole = {name: float(roc_auc_score(y, s)) for name, s in scores.items()}  # on all samples, unrounded
    out = {}
    for name in scores:
        lo, hi = np.quantile(per[name], [tail, 1 - tail])
        out[name] = {"auc": round(whole[name], 5), "ci": [round(float(lo), 5), round(float(hi), 5)]}
    for a, b in pairs:
        d = per[a] - per[b]
        lo, hi = np.quantile(d, [tail, 1 - tail])
        p = min(1.0, 2 * (min((d <= 0).sum(), (d >= 0).sum()) + 1) / (len(d) + 1))  # never 0 from finite draws
        out[f"{a}_vs_{b}"] = {
            "difference": round(whole[a] - whole[b], 5),
            "ci": [round(float(lo), 5), round(float(hi), 5)],
            "p": round(float(p), 5),
        }
    return out
