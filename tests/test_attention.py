"""Attention by row length gives the same logits and gradients as eager and sdpa attention."""

import pytest
import torch

from recpipe import RecpipeError
from recpipe.model import attention
from recpipe.model.decoding import PrefixCache


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).float()


def batch():
    ids = torch.randint(3, 64, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding, as the trainer pads
    mask[2, 5:] = 0
    return ids, mask


def logits_and_grads(model, implementation, ids, mask, prefix=0):
    model.set_attn_implementation(implementation)
    model.zero_grad()
    cache = PrefixCache(model, ids[:1, :prefix]).rows(len(ids)) if prefix else None
    out = model(input_ids=ids[:, prefix:], attention_mask=mask, cache=cache, use_cache=cache is not None)
    (out.logits * mask[:, prefix:, None]).sum().backward()
    return out.logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("short_keys", [0, 1024])  # sdpa branch, eager branch
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("prefix", [0, 4])
def test_length_attention_matches_eager(monkeypatch, short_keys, padded, prefix):
    monkeypatch.setattr(attention, "SHORT_KEYS", short_keys)
    model = tiny_model()
    ids, mask = batch()
    if not padded:
        mask = torch.ones_like(mask)
    ids[:, :prefix] = ids[0, :prefix]  # a shared prefix, as every TALLRec prompt has
    want, want_grads = logits_and_grads(model, "eager", ids, mask, prefix)
    got, got_grads = logits_and_grads(model, attention.pick_attention("auto", torch.device("cpu")), ids, mask, prefix)
    keep = mask[:, prefix:].bool()
    torch.testing.assert_close(got[keep], want[keep], rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_pick_attention():
    assert attention.pick_attention("auto", torch.device("cpu")) == "length"
    assert attention.pick_attention("auto", torch.device("cuda")) == "sdpa"
    assert attention.pick_attention("eager", torch.device("cpu")) == "eager"
    with pytest.raises(RecpipeError, match="model.attention 'fast'"):
        attention.pick_attention("fast", torch.device("cpu"))
