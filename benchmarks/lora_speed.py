"""LoRA training speed by adapter setting: the P5 model's adapter (r 16 on every linear layer)
with and without LoRA dropout, and the TALLRec adapter (r 8 on q/v), on the same batch.

Each setting runs optimizer steps (forward, recpipe's answer loss, backward, AdamW) on one fixed
batch of random tokens, half of them labelled as targets (as history items are with
p5.history_targets), in the dtype training would pick here. The script prints seconds per step
and tokens/s side by side, and each setting's speed relative to the P5 default.

    python benchmarks/lora_speed.py [--batch-size 4] [--length 400] [--steps 4]
"""

from __future__ import annotations

import argparse
import time

import torch

from recpipe import params
from recpipe.model.load import load, pick_dtype
from recpipe.model.train import IGNORE, add_lora, answer_loss
from recpipe.params import LoraParams


def seconds_per_step(name: str, sha256, lora: LoraParams, batch: dict, dtype: torch.dtype, steps: int) -> float:
    torch.manual_seed(0)
    model, _ = load(name, sha256)
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
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    p = params.load()
    dtype = pick_dtype(p.p5.train.dtype)
    ids = torch.randint(100, 40_000, (args.batch_size, args.length), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, : args.length // 2] = IGNORE
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    p5 = p.p5.lora
    settings = {
        f"P5 adapter (r {p5.rank}, {len(p5.target_modules)} modules), dropout {p5.dropout:g}": p5,
        f"P5 adapter (r {p5.rank}, {len(p5.target_modules)} modules), dropout 0.05": p5.model_copy(update={"dropout": 0.05}),
        "TALLRec adapter (r 8, q/v), dropout 0.05": LoraParams(),
    }
    tokens = args.batch_size * args.length
    print(f"{args.batch_size} x {args.length} tokens a step, {dtype}, best of {args.steps - 1} steps", flush=True)
    results = {}
    for label, lora in settings.items():
        results[label] = seconds_per_step(p.model.name, p.model.sha256, lora, batch, dtype, args.steps)
    base = next(iter(results.values()))
    print(f"{'adapter':50s} {'s/step':>7s} {'tokens/s':>9s} {'vs P5 default':>14s}")
    for label, seconds in results.items():
        print(f"{label:50s} {seconds:7.2f} {tokens / seconds:9.1f} {base / seconds:13.2f}x")


if __name__ == "__main__":
    main()
