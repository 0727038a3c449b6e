"""Evaluation throughput: recpipe's batched scoring against one prompt at a time.

recpipe.tallrec.evaluate.score sorts prompts by length, left-pads each batch to its own longest prompt
and asks the model for the last position's logits only. The naive way runs each prompt alone and
takes the full logits. Both score the same test prompts with the same model; the script prints
prompts/s of each, the ratio, and how far their P(yes) values differ. With --dtypes it also runs
recpipe's scoring in each dtype and prints speed and the metric shift (P(yes) difference, AUC).

    python benchmarks/eval_throughput.py [--n 64] [--batch-size 16] [--dtypes float32,bfloat16]
"""

from __future__ import annotations

import argparse
import sys
import time

import polars as pl
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from recpipe import params
from recpipe.model.load import answer_token_ids, load
from recpipe.tallrec.evaluate import score
from recpipe.templates import load_template


@torch.no_grad()
def score_one_at_a_time(model, tokenizer, prompts: list[str], yes_id: int, no_id: int) -> list[float]:
    model.eval()
    out = []
    for prompt in tqdm(prompts, desc="one at a time", unit="prompt", file=sys.stderr):
        logits = model(input_ids=torch.tensor([tokenizer(prompt).input_ids])).logits
        out.append(torch.softmax(logits[0, -1, [yes_id, no_id]].float(), dim=-1)[0].item())
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="test prompts to score")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", help="model name (default: model.name in params.yaml)")
    parser.add_argument("--dtypes", default="", help="also compare dtypes, e.g. float32,bfloat16")
    args = parser.parse_args()
    p = params.load()
    name = args.model or p.model.name
    test = pl.read_parquet("data/instructions/samples.parquet").filter(pl.col("split") == "test").head(args.n)
    prompts, labels = test["prompt"].to_list(), test["label"].to_list()
    tpl = load_template(p.instructions.template, {})

    model, tok = load(name, p.model.sha256 if not args.model else None)
    yes, no = answer_token_ids(tok, tpl["answer_yes"], tpl["answer_no"])
    t_batched, batched = timed(lambda: score(model, tok, prompts, yes, no, args.batch_size))
    t_single, single = timed(lambda: score_one_at_a_time(model, tok, prompts, yes, no))
    diff = max(abs(a - b) for a, b in zip(batched, single))
    print(f"{'scoring (float32, ' + str(len(prompts)) + ' prompts)':<44}{'seconds':>9}{'prompts/s':>11}")
    print(f"{'recpipe: sorted, left-padded, batch ' + str(args.batch_size):<44}{t_batched:>9.1f}{len(prompts) / t_batched:>11.2f}")
    print(f"{'naive: one prompt at a time, full logits':<44}{t_single:>9.1f}{len(prompts) / t_single:>11.2f}")
    print(f"speed-up: {t_single / t_batched:.2f}x   max |P(yes) batched - single|: {diff:.2e}")

    if args.dtypes:
        results = {}
        for dtype in args.dtypes.split(","):
            m, _ = load(name, p.model.sha256 if not args.model else None, dtype=getattr(torch, dtype))
            results[dtype] = timed(lambda: score(m, tok, prompts, yes, no, args.batch_size))
        first = args.dtypes.split(",")[0]
        print(f"\n{'dtype':<12}{'seconds':>9}{'prompts/s':>11}{'AUC':>9}{'max |dP(yes)| vs ' + first:>26}")
        for dtype, (t, p_yes) in results.items():
            shift = max(abs(a - b) for a, b in zip(p_yes, results[first][1]))
            print(f"{dtype:<12}{t:>9.1f}{len(prompts) / t:>11.2f}{roc_auc_score(labels, p_yes):>9.4f}{shift:>26.4f}")


if __name__ == "__main__":
    main()
