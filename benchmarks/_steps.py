"""One LoRA training step as the trainer runs it (autocast, AdamW), and its timing: shared by the
benchmarks that time training steps.

Not a benchmark itself (tests/test_benchmarks.py runs every benchmarks/*.py not starting with _)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def training_step(model, loss_fn: Callable, batch: dict, dtype: torch.dtype, lr: float) -> Callable[[], float]:
    """A step on `batch`: forward under autocast in `dtype`, `loss_fn(model, batch)` (summed loss,
    target count, output), backward, AdamW. Calling it returns the loss per target."""
    opt = torch.optim.AdamW([w for w in model.parameters() if w.requires_grad], lr=lr)

    def step() -> float:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss, n, _ = loss_fn(model, batch)
        (loss / n).backward()
        opt.step()
        opt.zero_grad()
        return loss.item() / int(n)

    return step


def time_steps(step: Callable[[], float], steps: int, warmup: int = 2) -> tuple[float, float]:
    """Seconds per step over `steps` after `warmup` untimed ones, and the last loss."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    return (time.perf_counter() - start) / steps, loss
