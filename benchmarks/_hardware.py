"""The hardware's own arithmetic rate, measured in the same run as a benchmark, so that a
benchmark about compute can print the share of it that each side reaches.

Not a benchmark itself (tests/test_benchmarks.py runs every benchmarks/*.py not starting with _)."""

from __future__ import annotations

import time

import torch


def matmul_flops(dtype: torch.dtype = torch.float32, size: int = 1024, repeats: int = 5) -> float:
    """Floating-point operations a second of a square torch.mm in `dtype`, best of `repeats`:
    a practical ceiling for what a model's matrix products can reach here."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=gen, device=device).to(dtype)
    b = torch.randn(size, size, generator=gen, device=device).to(dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def linear_params(model: torch.nn.Module) -> int:
    """Weights of the model's matrix products (every nn.Linear, the output layer included): a
    forward pass costs about 2 operations per weight per token (attention scores not counted)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def hardware_line(dtype: torch.dtype, peak: float, size: int) -> str:
    dtype_name = str(dtype).removeprefix("torch.")
    return f"hardware limit: torch.mm {size}x{size} in {dtype_name}, {peak / 1e9:.1f} GFLOP/s measured in this run"
