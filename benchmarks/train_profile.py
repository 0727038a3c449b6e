"""Where a LoRA training step's time goes, with PyTorch's fused attention (sdpa) and with plain
matmul-and-softmax attention (eager), on the same batch in one run.

One batch of the K-shot rows (by default data/sample/train.parquet), the model in --dtype with the
default LoRA adapter, recpipe's answer-only loss (recpipe.model.train.answer_loss) under autocast as
the trainer runs it, and an AdamW step. Each side warms up, then times --steps steps on the same
batch and profiles one more with torch.profiler: the share of the step's CPU time per kind of
operation, and the top operations. Tokens/s are set against this machine's torch.mm rate in --dtype
measured in the same run, at 4 operations per matrix weight per token (forward, and the backward
pass's input gradients).

    python benchmarks/train_profile.py [--model NAME] [--train data/sample/train.parquet]
        [--batch-size 8] [--steps 3] [--dtype bfloat16] [--attention sdpa,eager,auto] [--min-tokens 0] [--top 8]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import polars as pl
import torch

from _hardware import hardware_line, linear_params, matmul_flops
from _steps import time_steps, training_step
from recpipe.model.attention import pick_attention
from recpipe.model.load import load
from recpipe.model.train import PadCollator, add_lora, answer_loss, encode
from recpipe.params import schema as params

KINDS = {  # operation name fragments -> kind, first match wins
    "attention": ("attention", "bmm", "softmax"),
    "matmul": ("aten::mm", "aten::addmm", "aten::linear"),
    "dropout": ("bernoulli", "dropout"),
    "copies and casts": ("copy_", "_to_copy", "contiguous", "cat"),
    "elementwise": ("mul", "add", "div", "pow", "rsqrt", "mean", "neg", "silu", "sum", "fill_"),
}


def kind_of(name: str) -> str:
    return next((kind for kind, parts in KINDS.items() if any(p in name for p in parts)), "other")


def run(name, sha, p, rows, pad_id, dtype, attention, steps):
    torch.manual_seed(0)
    model, _ = load(name, sha, dtype=dtype, attention=pick_attention(attention, torch.device("cpu")))
    model = add_lora(model, p.lora)
    model.train()
    batch = PadCollator(pad_id)(rows)
    step = training_step(model, answer_loss, batch, dtype, p.train.lr)
    seconds, loss = time_steps(step, steps)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[kind_of(e.key)] += e.self_cpu_time_total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)
    return seconds, int(batch["attention_mask"].sum()), loss, by_kind, top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model name or local folder (default: model.name in params.yaml)")
    parser.add_argument(
        "--train", default="data/sample/train.parquet", help="the K-shot training rows (prompt, answer)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--attention",
        default="sdpa,eager,auto",
        help="attention implementations to compare (model.attention values), the first is the baseline",
    )
    parser.add_argument(
        "--min-tokens",
        type=int,
        default=0,
        help="take only rows of at least this many tokens (e.g. 1000 for P5's direct prompts)",
    )
    parser.add_argument("--top", type=int, default=8, help="operations listed per side")
    parser.add_argument("--mm-size", type=int, default=1024, help="matrix size of the torch.mm rate measurement")
    args = parser.parse_args()
    p = params.load()
    name, sha = (args.model, None) if args.model else (p.model.name, p.model.sha256)
    dtype = getattr(torch, args.dtype)
    shots = pl.read_parquet(args.train)
    model, tok = load(name, sha)
    weights = linear_params(model)
    del model
    rows = encode(
        shots["prompt"].to_list(), shots["answer"].to_list(), tok, max(p.train.max_length, args.min_tokens + 64)
    )
    rows = [r for r in rows if len(r["input_ids"]) >= args.min_tokens][: args.batch_size]
    peak = matmul_flops(dtype, args.mm_size)
    sides = {a: run(name, sha, p, rows, tok.pad_token_id, dtype, a, args.steps) for a in args.attention.split(",")}
    print(
        f"one step, batch {args.batch_size}, {args.dtype} body, LoRA r {p.lora.rank} on {', '.join(p.lora.target_modules)}"
    )
    print(f"{'attention':<12}{'s/step':>9}{'tokens/s':>10}{'of torch.mm':>13}{'loss':>9}  share of the step's CPU time")
    for attention, (seconds, tokens, loss, by_kind, _) in sides.items():
        total = sum(by_kind.values())
        shares = ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]))
        print(
            f"{attention:<12}{seconds:>9.3f}{tokens / seconds:>10.1f}{4 * weights * tokens / seconds / peak:>13.1%}{loss:>9.4f}  {shares}"
        )
    for attention, (*_, top) in sides.items():
        total = sum(e.self_cpu_time_total for e in top)
        print(
            f"top operations, {attention}: "
            + "; ".join(f"{e.key.removeprefix('aten::')} {e.self_cpu_time_total / total:.0%}" for e in top[: args.top])
        )
    names = list(sides)
    for other in names[1:]:
        print(f"{other} vs {names[0]}: {sides[names[0]][0] / sides[other][0]:.2f}x the tokens/s")
    print(hardware_line(dtype, peak, args.mm_size))


if __name__ == "__main__":
    main()
