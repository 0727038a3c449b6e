"""Scores come from float32 logits whatever dtype the model body runs in, and repeat exactly."""

import copy

import pytest
import torch
from scipy.stats import pearsonr

from recpipe.model.decoding import (
    PrefixCache,
    float32_logits,
    generate,
    length_batches,
    likelihood_ranking,
    output_layer,
)
from recpipe.model.load import answer_token_ids, load
from recpipe.tallrec.evaluate import score
from test_text_instructions_sample import built  # noqa: F401
from test_train_evaluate import tiny  # noqa: F401  (module fixture: the tiny model)

NAMES = {
    1: "The Usual Suspects (1995)",
    2: "Heat (1995)",
    3: "Casino (1995)",
    4: "Dr. No (1962)",
    5: "The House of Yes (1997)",
    6: "Fargo (1996)",
}


def large_answer_logits(model, tok, prompts):
    """Make the tiny model's Yes and No logits look like a real model's: both about 20 (a share
    common to both), their difference spread over about +-1 across the prompts. In bfloat16 a
    logit of 20 moves in steps of 0.125, which is what ties a bfloat16 output layer's scores."""
    yes, no = answer_token_ids(tok, "Yes.", "No.")
    with torch.no_grad():
        h = torch.stack(
            [model.get_decoder()(torch.tensor([tok(p).input_ids])).last_hidden_state[0, -1] for p in prompts]
        )
        mean, spread = h.mean(0), h - h.mean(0)
        direction = torch.linalg.svd(spread, full_matrices=False).Vh[0]
        diff = direction / (spread @ direction).std()
        model.lm_head.weight[yes] = 20 * mean / mean.norm() ** 2 + diff / 2
        model.lm_head.weight[no] = 20 * mean / mean.norm() ** 2 - diff / 2
    return yes, no


def test_bfloat16_body_scores_as_finely_as_float32(tiny, built):  # noqa: F811
    model, tok = load(str(tiny))
    prompts = built[1]["prompt"].head(32).to_list()
    yes, no = large_answer_logits(model, tok, prompts)
    half = copy.deepcopy(model).to(torch.bfloat16)
    same = copy.deepcopy(half).float()  # the bfloat16 weights, run in float32: only the arithmetic differs
    low = score(half, tok, prompts, yes, no, batch_size=8)
    full = score(same, tok, prompts, yes, no, batch_size=8)
    assert len(set(full)) == len(prompts)  # distinct prompts, distinct scores
    assert len(set(low)) == len(set(full))  # a bfloat16 output layer gives about half as many
    assert pearsonr(low, full)[0] > 0.99
    original = score(model, tok, prompts, yes, no, batch_size=8)  # float32 weights too
    assert pearsonr(low, original)[0] > 0.99


def test_same_prompts_give_the_same_scores_in_any_order_and_batch_size(tiny, built):  # noqa: F811
    model, tok = load(str(tiny))
    yes, no = answer_token_ids(tok, "Yes.", "No.")
    prompts = built[1]["prompt"].head(24).to_list()
    first = score(model, tok, prompts, yes, no, batch_size=8)
    assert score(model, tok, prompts, yes, no, batch_size=8) == first  # bit for bit
    backwards = score(model, tok, prompts[::-1], yes, no, batch_size=8)[::-1]
    for size in (1, 5, 24):
        other = score(model, tok, prompts, yes, no, batch_size=size)
        assert other == pytest.approx(first, abs=1e-6) and backwards == pytest.approx(first, abs=1e-6)
    # Batches follow (length, index): equal lengths keep their order, so batches never depend on
    # anything but the lengths and their order.
    assert list(length_batches([3, 1, 3, 1, 2], 2, "t")) == [[1, 3], [4, 0], [2]]


def test_likelihood_ranking_in_a_bfloat16_body_ranks_as_float32(tiny, built):  # noqa: F811
    model, tok = load(str(tiny))
    with torch.no_grad():
        model.lm_head.weight *= 30  # logits of a real model's size (tens), where bfloat16 steps are coarse
    half = copy.deepcopy(model).to(torch.bfloat16)
    prompts = [
        p[-n:] for p, n in zip(built[1]["prompt"].head(4).to_list(), (200, 80, 40, 1))
    ]  # the last: no prompt cache
    candidates = [list(NAMES)] * len(prompts)
    same = copy.deepcopy(half).float()  # the bfloat16 weights, run in float32
    assert likelihood_ranking(half, tok, prompts, candidates, NAMES) == likelihood_ranking(
        same, tok, prompts, candidates, NAMES
    )


def test_float32_logits_are_the_models_own_logits(tiny, built):  # noqa: F811
    """A plain model, a PeftModel and its merged weights, with and without a prefix cache: the
    same logits as the model's forward pass (float32 here, so only the route differs)."""
    from peft import LoraConfig, get_peft_model

    model, tok = load(str(tiny))
    ids = torch.tensor([tok(p).input_ids[:40] for p in built[1]["prompt"].head(3).to_list()])
    lora = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    merged = copy.deepcopy(lora).merge_and_unload()
    for m in (model, lora, merged):
        with torch.no_grad():
            own = m(input_ids=ids).logits
            assert torch.allclose(float32_logits(m, keep=0, input_ids=ids), own, atol=1e-5)
            assert torch.allclose(float32_logits(m, rows=[5, 7], input_ids=ids)[:, -1], own[:, -1, [5, 7]], atol=1e-5)
            cache = PrefixCache(m, ids[:, :30]).rows(1)
            tail = float32_logits(
                m, keep=torch.tensor([0, 9]), head=output_layer(m), input_ids=ids[:, 30:], cache=cache, use_cache=True
            )
            assert torch.allclose(tail, own[:, [30, 39]], atol=1e-5)
    assert not torch.allclose(lora(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-3)  # the adapter counts


def test_greedy_answers_are_generates_own(tiny, built):  # noqa: F811
    model, tok = load(str(tiny))
    prompts = [p[-n:] for p, n in zip(built[1]["prompt"].head(4).to_list(), (40, 200, 90, 10))]
    ours = generate(model, tok, prompts, max_new_tokens=6, batch_size=4)
    theirs = []
    for p in prompts:
        ids = torch.tensor([tok(p).input_ids])
        out = model.generate(
            input_ids=ids,
            max_new_tokens=6,
            do_sample=False,
            num_beams=1,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        theirs.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    assert ours == theirs
