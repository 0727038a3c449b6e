"""Direct recommendation (pick one of 100 candidates): every candidate scored exactly, against
trie-constrained beam search over the candidates.

Both get the same prompts (a user's last items and 100 candidates: the true next item and 99
items the user never rated, seeded; --candidates changes the 100) built from ML-100K's text
tables (by default data/text/ml-100k, which `dvc repro textualize@ml-100k` makes; --text takes any
such folder), the same model and dtype. The script prints, side by side from one run: prompts/s,
candidates ranked per second, HR@k / NDCG@k against the true next item, the speed ratio, and how
often beam search's top k is exactly the exact ranking's top k (where it is not, the beams pruned
a better-scoring candidate).

    python benchmarks/direct_ranking.py [--n 10] [--beams 20] [--k 10] [--model NAME] [--adapter DIR] [--dtype auto]
        [--text data/text/ml-100k] [--candidates 100] [--history-len 10]
"""

from __future__ import annotations

import argparse
import random
import time

import polars as pl

from recpipe.metrics import hit_and_ndcg
from recpipe.model.decoding import ItemTrie, constrained_topk, likelihood_ranking
from recpipe.model.load import load, pick_dtype
from recpipe.params import schema as params
from recpipe.templates import LIST_SEPARATOR

TEXT = "data/text/ml-100k"


def direct_prompts(
    text: str, n: int, negatives: int = 99, history_len: int = 10, seed: int = 0
) -> tuple[list[str], list[list[int]], list[int], dict[int, str]]:
    items = pl.read_parquet(f"{text}/items.parquet")
    names = dict(zip(items["item_id"].to_list(), items["name"].to_list()))
    rng = random.Random(seed)
    prompts, candidates, targets = [], [], []
    for seq in pl.read_parquet(f"{text}/histories.parquet").head(n)["item_id"].to_list():
        history, target = seq[-history_len - 1 : -1], seq[-1]
        cands = rng.sample(sorted(set(names) - set(seq)), negatives) + [target]
        rng.shuffle(cands)
        listed = LIST_SEPARATOR.join(
            names[i] for i in cands
        )  # names stand as the answer writes them (recpipe.templates.in_text)
        recent = LIST_SEPARATOR.join(names[i] for i in history)
        prompts.append(
            f"The user recently chose: {recent}\nPick the one item the user is most likely to choose next from: {listed}\nChoice:"
        )
        candidates.append(cands)
        targets.append(target)
    return prompts, candidates, targets, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10, help="prompts (one per user)")
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--model", help="model name or local folder (default: model.name in params.yaml)")
    parser.add_argument("--adapter", help="a LoRA adapter folder to merge in (e.g. data/p5/ml-100k/adapter)")
    parser.add_argument("--dtype", default="auto", help="float32, bfloat16 or auto (as evaluate.dtype)")
    parser.add_argument("--text", default=TEXT, help="folder with items.parquet and histories.parquet")
    parser.add_argument(
        "--candidates", type=int, default=100, help="candidates a prompt: the true next item and unrated ones"
    )
    parser.add_argument("--history-len", type=int, default=10, help="items of each user's history in the prompt")
    args = parser.parse_args()
    p = params.load()
    name, sha = (args.model, None) if args.model else (p.model.name, p.model.sha256)
    model, tok = load(name, sha, dtype=pick_dtype(args.dtype))
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    prompts, candidates, targets, names = direct_prompts(args.text, args.n, args.candidates - 1, args.history_len)

    start = time.perf_counter()
    exact = [r[: args.k] for r in likelihood_ranking(model, tok, prompts, candidates, names)]
    t_exact = time.perf_counter() - start
    start = time.perf_counter()
    tries = [ItemTrie({i: names[i] for i in c}, tok) for c in candidates]
    beam, validity = constrained_topk(model, tok, prompts, tries, k=args.k, beams=args.beams, batch_size=2)
    t_beam = time.perf_counter() - start

    ks = tuple(k for k in (1, 5, 10) if k <= args.k)
    cols = [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks if k > 1]
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    print(
        f"{'direct ranking (' + str(args.n) + ' prompts, ' + str(args.candidates) + ' candidates, ' + dtype + ')':<52}{'prompts/s':>10}{'cands/s':>9}"
        + "".join(f"{c:>8}" for c in cols)
    )
    for label, ranked, seconds in (
        ("every candidate scored", exact, t_exact),
        (f"trie-constrained beam search, {args.beams} beams", beam, t_beam),
    ):
        m = hit_and_ndcg(ranked, targets, ks)
        print(
            f"{label:<52}{args.n / seconds:>10.3f}{args.candidates * args.n / seconds:>9.1f}"
            + "".join(f"{m[c]:>8.4f}" for c in cols)
        )
    same = sum(a == b for a, b in zip(exact, beam))
    print(
        f"scoring vs beam search: {t_beam / t_exact:.2f}x faster; same top {args.k}: {same} of {args.n} prompts; beam validity {validity:.3f}"
    )


if __name__ == "__main__":
    main()
