"""LoRA training speed by adapter setting: the P5 model's adapter (r 16 on every linear layer)
with and without LoRA dropout, and the TALLRec adapter (r 8 on q/v), on the same batch.

Each setting runs optimizer steps (forward, recpipe's answer loss, backward, AdamW) on one fixed
batch of random tokens, half of them labelled as targets (as history items are with
p5.history_targets), in the dtype training would pick here (p5.train.dtype; --dtype overrides it).
The script prints seconds per step and tokens/s side by side, each setting's speed relative to the
P5 default, and the share of the hardware's torch.mm rate in that dtype (measured in the same run)
each reaches, counting 4 operations per matrix weight per token (the forward pass, and the
backward pass's input gradients: the frozen weights get no gradient of their own).

    python benchmarks/lora_speed.py [--batch-size 4] [--length 400] [--steps 4] [--model NAME] [--dtype auto]
        [--mm-size 1024]
"""

from __future__ import annotations

import argparse
import time

import torch

from _hardware import hardware_line, linear_params, matmul_flops
from recpipe.model.load import load, pick_dtype
from recpipe.model.train import IGNORE, add_lora, answer_loss
from recpipe.params import schema as params
from recpipe.params.train import LoraParams


def seconds_per_step(model, lora: LoraParams, batch: dict, dtype: torch.dtype, steps: int) -> float:
    torch.manual_seed(0)
    model = add_lora(model, lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast(next(model.parameters()).device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss, n, _ = answer_loss(model, batch)
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return min(times[1:])  # the first step warms up kernels and allocations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--length", type=int, default=400, help="tokens per row")
    parser.add_argument(
        "--steps", type=int, default=4, help="optimizer steps a setting (at least 2: the first warms up)"
    )
    parser.add_argument("--model", help="model name or local folder (default: model.name in params.yaml)")
    parser.add_argument("--dtype", help="float32, bfloat16 or auto (default: p5.train.dtype in params.yaml)")
    parser.add_argument("--mm-size", type=int, default=1024, help="matrix size of the torch.mm rate measurement")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    p = params.load()
    name, sha = (args.model, None) if args.model else (p.model.name, p.model.sha256)
    dtype = pick_dtype(args.dtype or p.p5.train.dtype)

    def fresh_model():
        return load(name, sha)[0]

    first = fresh_model()
    vocab, weights = first.config.vocab_size, linear_params(first)
    ids = torch.randint(
        min(100, vocab // 2), vocab, (args.batch_size, args.length), generator=torch.Generator().manual_seed(0)
    )
    labels = ids.clone()
    labels[:, : args.length // 2] = IGNORE
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    p5 = p.p5.lora
    settings = {
        f"P5 adapter (r {p5.rank}, {len(p5.target_modules)} modules), dropout {p5.dropout:g}": p5,
        f"P5 adapter (r {p5.rank}, {len(p5.target_modules)} modules), dropout 0.05": p5.model_copy(
            update={"dropout": 0.05}
        ),
        "TALLRec adapter (r 8, q/v), dropout 0.05": LoraParams(),
    }
    tokens = args.batch_size * args.length
    print(f"{args.batch_size} x {args.length} tokens a step, {dtype}, best of {args.steps - 1} steps", flush=True)
    seconds_per_step(first, next(iter(settings.values())), batch, dtype, 2)  # warm-up: first-call costs
    results = {}
    for label, lora in settings.items():
        results[label] = seconds_per_step(fresh_model(), lora, batch, dtype, args.steps)
    base = next(iter(results.values()))
    work = 4 * weights * tokens  # a step's matrix arithmetic, the adapters aside
    peak = matmul_flops(dtype, args.mm_size)
    print(f"{'adapter':50s} {'s/step':>7s} {'tokens/s':>9s} {'vs P5 default':>14s} {'of torch.mm':>12s}")
    for label, seconds in results.items():
        print(
            f"{label:50s} {seconds:7.3f} {tokens / seconds:9.1f} {base / seconds:13.2f}x {work / seconds / peak:12.2%}"
        )
    print(hardware_line(dtype, peak, args.mm_size))


if __name__ == "__main__":
    main()
