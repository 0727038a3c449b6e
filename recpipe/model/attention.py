"""Attention chosen by row length on the CPU: `model.attention: auto`.

On a CPU, PyTorch's fused attention (sdpa) runs its backward pass as a flash-attention kernel
that is slow on short rows: on a TALLRec batch (8 prompts of ~200 tokens) it took half of a LoRA
step, and plain matmul-and-softmax attention (eager) made the whole step about twice as fast. On
long rows (P5's 1,250-token direct prompts) the fused kernel is about three times faster than
eager. So "length" runs eager up to SHORT_KEYS keys and sdpa above (benchmarks/train_profile.py
measures each on the same batch). On CUDA, auto is sdpa.
"""

from __future__ import annotations

import torch

from recpipe import RecpipeError

NAME = "length"
SHORT_KEYS = 512  # keys per query at or below which eager attention runs


def _additive(mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The sdpa-style mask (None: causal without padding; bool: True where allowed; float: added)
    as the additive float mask eager attention adds to its scores."""
    if mask is not None and mask.dtype != torch.bool:
        return mask
    if mask is None:  # causal: each query sees the keys up to its own position (queries are the last rows)
        q, k = query.shape[-2], key.shape[-2]
        mask = torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)[None, None]
    blocked = torch.finfo(query.dtype).min
    return torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill_(~mask, blocked)


def length_attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    if key.shape[-2] > SHORT_KEYS:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    return eager_attention_forward(module, query, key, value, _additive(attention_mask, query, key), **kwargs)


def register() -> None:
    """Make "length" a name transformers accepts as an attention implementation, with sdpa's masks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, length_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def pick_attention(name: str, device: torch.device) -> str:
    """model.attention as a transformers attention implementation: auto is "length" on the CPU and
    sdpa on CUDA; any other value (eager, sdpa, flash_attention_2, ...) is used as given."""
    from transformers import AttentionInterface

    if name == "auto":
        name = NAME if device.type == "cpu" else "sdpa"
    if name == NAME:
        register()
    elif name != "eager" and name not in AttentionInterface._global_mapping and "/" not in name:  # "/": a Hub kernel
        known = ", ".join(["auto", NAME, "eager", *sorted(AttentionInterface._global_mapping)])
        raise RecpipeError(f"model.attention {name!r}: not an attention implementation transformers knows ({known})")
    return name
