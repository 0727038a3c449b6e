"""Evaluation throughput: recpipe's batched scoring against one prompt at a time.

recpipe.tallrec.evaluate.score sorts prompts by length, left-pads each batch to its own longest prompt
and asks the model for the last position's logits only. The naive way runs each prompt alone and
takes the full logits. Both score the same test prompts (by default those of
data/instructions/samples.parquet; --samples takes any such file) with the same model; the script
prints prompts/s of each, the ratio, how far their P(yes) values differ, and the share of the
hardware's torch.mm rate (measured in the same run) each reaches, counting 2 operations per matrix
weight per prompt token for both. With --compare it also runs recpipe's scoring with each given
body dtype and attention (model.attention values) and prints prompts/s, the share of torch.mm's rate
in that dtype, the AUC, the distinct scores, and how far P(yes) moves from the first setting (the
largest difference and the rank correlation).

    python benchmarks/eval_throughput.py [--n 64] [--batch-size 16] [--model NAME]
        [--compare float32:auto,bfloat16:sdpa,bfloat16:auto] [--samples data/instructions/samples.parquet] [--mm-size 1024]
"""

from __future__ import annotations

import argparse
import sys
import time

import polars as pl
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from _hardware import hardware_line, linear_params, matmul_flops
from recpipe.model.attention import pick_attention
from recpipe.model.load import answer_token_ids, load
from recpipe.params import schema as params
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
    parser.add_argument("--model", help="model name or local folder (default: model.name in params.yaml)")
    parser.add_argument(
        "--compare", default="", help="also compare body dtype:attention settings, e.g. float32:auto,bfloat16:auto"
    )
    parser.add_argument(
        "--samples",
        default="data/instructions/samples.parquet",
        help="the instruction samples (their test split is scored)",
    )
    parser.add_argument("--mm-size", type=int, default=1024, help="matrix size of the torch.mm rate measurement")
    args = parser.parse_args()
    p = params.load()
    name = args.model or p.model.name
    test = pl.read_parquet(args.samples).filter(pl.col("split") == "test").head(args.n)
    prompts, labels = test["prompt"].to_list(), test["label"].to_list()
    tpl = load_template(p.instructions.template, {})

    model, tok = load(name, p.model.sha256 if not args.model else None)
    yes, no = answer_token_ids(tok, tpl["answer_yes"], tpl["answer_no"])
    score(model, tok, prompts[:2], yes, no, args.batch_size)  # warm-up: first-call costs, for both sides
    t_batched, batched = timed(lambda: score(model, tok, prompts, yes, no, args.batch_size))
    t_single, single = timed(lambda: score_one_at_a_time(model, tok, prompts, yes, no))
    diff = max(abs(a - b) for a, b in zip(batched, single))
    work = 2 * linear_params(model) * sum(len(tok(prompt).input_ids) for prompt in prompts)
    peak = matmul_flops(torch.float32, args.mm_size)
    print(
        f"{'scoring (float32, ' + str(len(prompts)) + ' prompts)':<44}{'seconds':>9}{'prompts/s':>11}{'of torch.mm':>13}"
    )
    print(
        f"{'recpipe: sorted, left-padded, batch ' + str(args.batch_size):<44}{t_batched:>9.2f}{len(prompts) / t_batched:>11.2f}{work / t_batched / peak:>13.2%}"
    )
    print(
        f"{'naive: one prompt at a time, full logits':<44}{t_single:>9.2f}{len(prompts) / t_single:>11.2f}{work / t_single / peak:>13.2%}"
    )
    print(f"speed-up: {t_single / t_batched:.2f}x   max |P(yes) batched - single|: {diff:.2e}")
    print(hardware_line(torch.float32, peak, args.mm_size))

    if args.compare:
        from scipy.stats import spearmanr

        results = {}
        for setting in args.compare.split(","):
            dtype, _, attention = setting.partition(":")
            m, _ = load(
                name,
                p.model.sha256 if not args.model else None,
                dtype=getattr(torch, dtype),
                attention=pick_attention(attention or "auto", torch.device("cpu")),
            )
            score(m, tok, prompts[:2], yes, no, args.batch_size)  # warm-up
            seconds, p_yes = timed(lambda m=m: score(m, tok, prompts, yes, no, args.batch_size))
            results[setting] = seconds, p_yes, matmul_flops(getattr(torch, dtype), args.mm_size)
        first = next(iter(results.values()))[1]
        print(
            f"\n{'dtype:attention':<20}{'seconds':>9}{'prompts/s':>11}{'of torch.mm':>13}{'AUC':>9}{'distinct':>10}{'max |dP|':>10}{'spearman':>10}  vs {next(iter(results))}"
        )
        for setting, (seconds, p_yes, rate) in results.items():
            shift = max(abs(a - b) for a, b in zip(p_yes, first))
            auc = f"{roc_auc_score(labels, p_yes):.4f}" if len(set(labels)) == 2 else "n/a"  # one class: undefined
            rho = spearmanr(p_yes, first).statistic if len(set(first)) > 1 else float("nan")
            print(
                f"{setting:<20}{seconds:>9.2f}{len(prompts) / seconds:>11.2f}{work / seconds / rate:>13.2%}{auc:>9}{len(set(p_yes)):>10}{shift:>10.4f}{rho:>10.4f}"
            )


if __name__ == "__main__":
    main()
