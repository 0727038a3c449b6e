"""Trie-constrained decoding writes only real items; ranking metrics."""

import pytest
from test_text_instructions_sample import built  # noqa: F401
from test_train_evaluate import tiny  # noqa: F401  (module fixture: the tiny model)

from recpipe import RecpipeError
from recpipe.metrics import hit_and_ndcg
from recpipe.model.decoding import (
    ItemTrie,
    PrefixCache,
    constrained_beams,
    constrained_topk,
    free_topk,
)
from recpipe.model.load import load

NAMES = {1: "The Usual Suspects (1995)", 2: "Heat (1995)", 3: "Heat (1995)", 4: "Dr. No (1962)", 5: "The House of Yes (1997)"}


def test_trie_allows_exactly_the_item_continuations(tiny):  # noqa: F811
    _, tok = load(str(tiny))
    trie = ItemTrie(NAMES, tok)
    first = {tok(n, add_special_tokens=False).input_ids[0] for n in NAMES.values()}
    assert set(trie.next_tokens(())) == first
    heat = tuple(tok("Heat (1995)", add_special_tokens=False).input_ids)
    assert trie.next_tokens(heat) == [tok.eos_token_id]
    assert trie.items(heat + (tok.eos_token_id,)) == [2, 3]  # same name: both items
    assert trie.next_tokens((10**6,)) == [] and trie.items(heat) == []


def test_constrained_beam_search_never_writes_a_non_item(tiny, built):  # noqa: F811
    model, tok = load(str(tiny))
    prompts = built[1]["prompt"].head(3).to_list()
    ranked, validity = constrained_topk(model, tok, prompts, ItemTrie(NAMES, tok), k=4, beams=5, batch_size=2)
    assert len(ranked) == 3 and validity == 1.0  # every returned beam spells an item
    for items in ranked:
        assert items and set(items) <= set(NAMES) and len(items) == len(set(items)) <= 4
    # The untrained model writes free text: matched after the fact, it rarely names an item.
    _, validity = free_topk(model, tok, prompts, NAMES, k=4, beams=5, max_new_tokens=8, batch_size=2)
    assert 0 <= validity < 1


def test_one_trie_per_prompt_ranks_only_its_own_candidates(tiny, built):  # noqa: F811
    model, tok = load(str(tiny))
    # Lengths differ, so batches are reordered by length: each prompt must still get its own trie.
    prompts = [p[-n:] for p, n in zip(built[1]["prompt"].head(4).to_list(), (300, 20, 150, 60))]
    own = [{1: NAMES[1], 4: NAMES[4]}, {2: NAMES[2], 5: NAMES[5]}, NAMES, {4: NAMES[4], 5: NAMES[5]}]
    tries = [ItemTrie(names, tok) for names in own]
    ranked, validity = constrained_topk(model, tok, prompts, tries, k=2, beams=2, batch_size=3)
    assert validity == 1.0
    # Two names, two beams: both, not the first one twice (a finished beam's copies crowd nothing out).
    assert sorted(ranked[0]) == [1, 4] and sorted(ranked[1]) == [2, 5] and sorted(ranked[3]) == [4, 5]
    assert ranked[2] and set(ranked[2]) <= set(NAMES)
    # History exclusion happens before the cut to k.
    ranked, _ = constrained_topk(model, tok, prompts, tries, k=1, beams=2, batch_size=3, exclude=[{1}, set(), set(), {4, 5}])
    assert ranked[0] == [4] and ranked[3] == []
    with pytest.raises(RecpipeError, match="2 tries for 4 prompts"):
        constrained_topk(model, tok, prompts, tries[:2], k=2, beams=2)


def test_prompt_run_once_gives_what_generate_gives(tiny, built):  # noqa: F811
    model, tok = load(str(tiny))
    # Different lengths: left padding and position ids must match generate()'s own numbering.
    prompts = [p[-n:] for p, n in zip(built[1]["prompt"].head(5).to_list(), (300, 20, 150, 60, 2))]
    trie = ItemTrie(NAMES, tok)
    shared = constrained_beams(model, tok, prompts, trie, beams=4, batch_size=3, share_prompt=True)
    plain = constrained_beams(model, tok, prompts, trie, beams=4, batch_size=3, share_prompt=False)
    assert shared == plain


def test_beam_smaller_than_k_is_an_error(tiny):  # noqa: F811
    model, tok = load(str(tiny))
    with pytest.raises(RecpipeError, match="beam size 3 is smaller than k=5"):
        constrained_topk(model, tok, ["x"], ItemTrie(NAMES, tok), k=5, beams=3)


def test_hit_rate_and_ndcg():
    ranked = [[3, 1, 2], [9, 8, 7], [5]]
    m = hit_and_ndcg(ranked, [1, 7, 5], ks=(1, 2, 3))
    assert m["hr@1"] == pytest.approx(1 / 3) or m["hr@1"] == round(1 / 3, 5)
    assert m["hr@2"] == round(2 / 3, 5) and m["hr@3"] == 1.0
    assert m["ndcg@3"] == round((1 / 1.5849625 + 1 / 2 + 1) / 3, 5)
    with pytest.raises(ValueError):
        hit_and_ndcg([[1]], [1, 2])


def test_likelihood_ranking_scores_every_candidate_exactly(tiny, built):  # noqa: F811
    import torch

    from recpipe.model.decoding import likelihood_ranking

    model, tok = load(str(tiny))
    prompts = [p[-n:] for p, n in zip(built[1]["prompt"].head(3).to_list(), (200, 30, 1))]  # the last: no prompt cache
    candidates = [[1, 2, 4, 5], [5, 4], [3, 1, 2, 4, 5]]
    ranked = likelihood_ranking(model, tok, prompts, candidates, NAMES, chunk=3)  # chunks of 3: several per prompt

    def mean_log_prob(prompt: str, item: int) -> float:  # one candidate, the whole sequence, no cache
        p = tok(prompt).input_ids
        a = tok(NAMES[item], add_special_tokens=False).input_ids + [tok.eos_token_id]
        with torch.no_grad():
            logp = model(torch.tensor([p + a])).logits[0, len(p) - 1 : -1].float().log_softmax(-1)
        return logp.gather(-1, torch.tensor(a)[:, None]).mean().item()

    for prompt, cands, got in zip(prompts, candidates, ranked):
        assert got == sorted(cands, key=lambda i: (-round(mean_log_prob(prompt, i), 5), i))


def test_prefix_cache_hands_out_copies_that_leave_the_prefix_as_it_was(tiny, built):  # noqa: F811
    """Each pass appends to the cache it is given: the prefix's own keys and values stay as
    computed, so a second pass over the same rows gives the same logits as the first."""
    import torch

    model, tok = load(str(tiny))
    ids = torch.tensor([tok(built[1]["prompt"][0]).input_ids])
    prefix, rest = ids[:, :-3], ids[:, -3:]
    cache = PrefixCache(model, prefix)
    keys = [layer.keys.clone() for layer in cache.cache.layers]
    with torch.no_grad():
        plain = model(input_ids=ids).logits[:, -3:]
        for n in (1, 3, 1):
            out = model(input_ids=rest.repeat(n, 1), cache=cache.rows(n), use_cache=True).logits
            assert torch.allclose(out, plain.expand(n, -1, -1), atol=1e-5)
    assert all(torch.equal(layer.keys, k) for layer, k in zip(cache.cache.layers, keys, strict=True))
    assert PrefixCache(model, ids[:, :0]).rows(4) is None  # no prefix: no cache
