"""Trie-constrained beam search against free generation matched to items afterwards.

Both sides get the same sequential-recommendation prompts (a user's last items, "which comes
next?") built from ML-100K's text tables (data/text/ml-100k, `dvc repro textualize@ml-100k`
makes them), the same model and the same beam size, and rank items by their beams. The script
prints, side by side from one run: the share of generated sequences that name a real item
(validity), prompts/s and HR@k / NDCG@k against each user's true next item.

    python benchmarks/decoding.py [--n 20] [--beams 10] [--k 10] [--model NAME]
"""

from __future__ import annotations

import argparse
import time

import polars as pl

from recpipe import params
from recpipe.model import load
from recpipe.ranking import ItemTrie, constrained_topk, free_topk, hit_and_ndcg

TEXT = "data/text/ml-100k"


def prompts_and_targets(n: int, history_len: int = 10) -> tuple[list[str], list[int], dict[int, str]]:
    items = pl.read_parquet(f"{TEXT}/items.parquet")
    names = dict(zip(items["item_id"].to_list(), items["name"].to_list()))
    hist = pl.read_parquet(f"{TEXT}/histories.parquet").head(n)
    prompts, targets = [], []
    for seq in hist["item_id"].to_list():
        history, target = seq[-history_len - 1 : -1], seq[-1]
        listed = "; ".join(names[i] for i in history)
        prompts.append(f"A viewer watched these movies, in this order: {listed}.\nThe next movie they watched was: ")
        targets.append(target)
    return prompts, targets, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20, help="prompts (one per user)")
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--model", help="model name (default: model.name in params.yaml)")
    args = parser.parse_args()
    p = params.load()
    name, sha = (args.model, None) if args.model else (p.model.name, p.model.sha256)
    model, tok = load(name, sha)
    prompts, targets, names = prompts_and_targets(args.n)
    trie = ItemTrie(names, tok)

    start = time.perf_counter()
    ranked_c, validity_c = constrained_topk(model, tok, prompts, trie, k=args.k, beams=args.beams)
    t_c = time.perf_counter() - start
    start = time.perf_counter()
    ranked_f, validity = free_topk(model, tok, prompts, names, k=args.k, beams=args.beams, max_new_tokens=trie.max_len)
    t_f = time.perf_counter() - start

    ks = tuple(k for k in (1, 5, 10) if k <= args.k)
    m_c, m_f = hit_and_ndcg(ranked_c, targets, ks), hit_and_ndcg(ranked_f, targets, ks)
    cols = [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks if k > 1]
    print(f"{'decoding (' + str(args.n) + ' prompts, ' + str(args.beams) + ' beams)':<34}{'validity':>9}{'prompts/s':>11}" + "".join(f"{c:>9}" for c in cols))
    print(f"{'trie-constrained beam search':<34}{validity_c:>9.3f}{args.n / t_c:>11.3f}" + "".join(f"{m_c[c]:>9.4f}" for c in cols))
    print(f"{'free beam search + exact match':<34}{validity:>9.3f}{args.n / t_f:>11.3f}" + "".join(f"{m_f[c]:>9.4f}" for c in cols))
    print(f"items per prompt returned: constrained {sum(map(len, ranked_c)) / args.n:.1f}, free {sum(map(len, ranked_f)) / args.n:.1f} (of k={args.k})")


if __name__ == "__main__":
    main()
