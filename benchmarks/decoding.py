"""Trie-constrained beam search against free generation matched to items afterwards.

Both sides get the same sequential-recommendation prompts (a user's last items, "which comes
next?") built from ML-100K's text tables (by default data/text/ml-100k, which `dvc repro
textualize@ml-100k` makes; --text takes any such folder), the same model and the same beam size,
and rank items by their beams. The script prints, side by side from one run: the share of
generated sequences that name a real item (validity), prompts/s, items/s (distinct items returned
per second) and HR@k / NDCG@k against each user's true next item, then the speed ratio. The constrained search runs twice: the way recpipe runs it (each
prompt through the model once, its keys and values copied for every beam) and generate()'s own
way (the prompt copied for every beam first); both must return the same items.

    python benchmarks/decoding.py [--n 20] [--beams 10] [--k 10] [--model NAME] [--dtype float32]
        [--text data/text/ml-100k] [--history-len 10]
"""

from __future__ import annotations

import argparse
import time

import polars as pl

from recpipe.metrics import hit_and_ndcg
from recpipe.model.decoding import ItemTrie, constrained_topk, free_topk
from recpipe.model.load import load, pick_dtype
from recpipe.params import schema as params
from recpipe.templates import LIST_SEPARATOR

TEXT = "data/text/ml-100k"


def prompts_and_targets(text: str, n: int, history_len: int = 10) -> tuple[list[str], list[int], dict[int, str]]:
    items = pl.read_parquet(f"{text}/items.parquet")
    names = dict(zip(items["item_id"].to_list(), items["name"].to_list()))
    hist = pl.read_parquet(f"{text}/histories.parquet").head(n)
    prompts, targets = [], []
    for seq in hist["item_id"].to_list():
        history, target = seq[-history_len - 1 : -1], seq[-1]
        listed = LIST_SEPARATOR.join(
            names[i] for i in history
        )  # names stand as the answer writes them (recpipe.templates.in_text)
        prompts.append(f"A viewer watched these movies, in this order: {listed}\nThe next movie they watched was:")
        targets.append(target)
    return prompts, targets, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20, help="prompts (one per user)")
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--model", help="model name or local folder (default: model.name in params.yaml)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or auto (as evaluate.dtype)")
    parser.add_argument("--text", default=TEXT, help="folder with items.parquet and histories.parquet")
    parser.add_argument("--history-len", type=int, default=10, help="items of each user's history in the prompt")
    args = parser.parse_args()
    p = params.load()
    name, sha = (args.model, None) if args.model else (p.model.name, p.model.sha256)
    model, tok = load(name, sha)
    model = model.to(pick_dtype(args.dtype))
    prompts, targets, names = prompts_and_targets(args.text, args.n, args.history_len)
    trie = ItemTrie(names, tok)

    runs = {}  # label: (ranked, validity, seconds)
    for label, share in (("trie-constrained, prompt run once", True), ("trie-constrained, prompt per beam", False)):
        start = time.perf_counter()
        ranked, validity = constrained_topk(model, tok, prompts, trie, k=args.k, beams=args.beams, share_prompt=share)
        runs[label] = (ranked, validity, time.perf_counter() - start)
    start = time.perf_counter()
    ranked, validity = free_topk(model, tok, prompts, names, k=args.k, beams=args.beams, max_new_tokens=trie.max_len)
    runs["free beam search + exact match"] = (ranked, validity, time.perf_counter() - start)

    ks = tuple(k for k in (1, 5, 10) if k <= args.k)
    cols = [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks if k > 1]
    print(
        f"{'decoding (' + str(args.n) + ' prompts, ' + str(args.beams) + ' beams, ' + args.dtype + ')':<36}{'validity':>9}{'prompts/s':>11}{'items/s':>9}{'items/prompt':>13}"
        + "".join(f"{c:>8}" for c in cols)
    )
    for label, (ranked, validity, seconds) in runs.items():
        m = hit_and_ndcg(ranked, targets, ks)
        returned = sum(map(len, ranked))
        print(
            f"{label:<36}{validity:>9.3f}{args.n / seconds:>11.3f}{returned / seconds:>9.2f}{returned / args.n:>13.1f}"
            + "".join(f"{m[c]:>8.4f}" for c in cols)
        )
    (once, _, t_once), (per_beam, _, t_per_beam) = (
        runs["trie-constrained, prompt run once"],
        runs["trie-constrained, prompt per beam"],
    )
    _, free_validity, t_free = runs["free beam search + exact match"]
    _, once_validity, _ = runs["trie-constrained, prompt run once"]
    print(
        f"constrained vs free: {t_free / t_once:.2f}x the prompts/s; validity {once_validity:.3f} vs {free_validity:.3f}"
    )
    print(f"prompt run once vs per beam: {t_per_beam / t_once:.2f}x faster; same items: {once == per_beam}")


if __name__ == "__main__":
    main()
