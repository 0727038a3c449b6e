"""Trie-constrained decoding writes only real items; ranking metrics."""

import pytest

from recpipe import RecpipeError
from recpipe.metrics import hit_and_ndcg
from recpipe.model.decoding import (
    ItemTrie,
    PrefixCache,
    constrained_beams,
    constrained_topk,
    free_topk,
    name_tokens,
    written_out_beams,
)
from recpipe.model.load import load
from test_text_instructions_sample import built  # noqa: F401
from test_train_evaluate import tiny  # noqa: F401  (module fixture: the tiny model)

NAMES = {
    1: "The Usual Suspects (1995)",
    2: "Heat (1995)",
    3: "Heat (1995)",
    4: "Dr. No (1962)",
    5: "The House of Yes (1997)",
}


def test_trie_allows_exactly_the_item_continuations(tiny):  # noqa: F811
    _, tok = load(str(tiny))
    trie = ItemTrie(NAMES, tok)
    first = {name_tokens(tok, n)[0] for n in NAMES.values()}
    assert set(trie.next_tokens(())) == first
    heat = tuple(name_tokens(tok, "Heat (1995)"))
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
    ranked, _ = constrained_topk(
        model, tok, prompts, tries, k=1, beams=2, batch_size=3, exclude=[{1}, set(), set(), {4, 5}]
    )
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


MORE = {**NAMES, 6: "Heat Wave (1990)", 7: "The Usual Gang (1980)", 8: "Dr. Strangelove (1964)", 9: "Yes Man (2008)"}


@pytest.mark.parametrize("beams", [2, 3, 5])
def test_written_out_beam_search_is_generates(tiny, built, beams):  # noqa: F811
    """The beam search written out for intra positions, run without them, returns what
    generate()'s returns: the same sequences' items in the same order, beam for beam."""
    model, tok = load(str(tiny))
    prompts = [p[-n:] for p, n in zip(built[1]["prompt"].head(4).to_list(), (300, 20, 150, 1))]
    trie = ItemTrie(MORE, tok).without({2})
    expected = constrained_beams(model, tok, prompts, trie, beams=beams, batch_size=1)
    assert [written_out_beams(model, tok, p, trie, beams) for p in prompts] == expected


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
        a = name_tokens(tok, NAMES[item]) + [tok.eos_token_id]
        with torch.no_grad():
            logp = model(torch.tensor([p + a])).logits[0, len(p) - 1 : -1].float().log_softmax(-1)
        return logp.gather(-1, torch.tensor(a)[:, None]).mean().item()

    for prompt, cands, got in zip(prompts, candidates, ranked):
        assert got == sorted(cands, key=lambda i: (-round(mean_log_prob(prompt, i), 5), i))


def test_expected_ratings_are_the_mean_under_each_whole_ratings_probability(tiny, built):  # noqa: F811
    """The mean rating equals a naive computation: each rating's text and EOS after the whole
    prompt, no cache, its summed log-probability, normalised over the scale."""
    import torch

    from recpipe.model.decoding import expected_ratings
    from recpipe.p5.families import rating_text

    model, tok = load(str(tiny))
    prompts = [p[-n:] for p, n in zip(built[1]["prompt"].head(4).to_list(), (200, 60, 30, 1))]
    scale = [1.0, 2.0, 3.0, 4.0, 5.0]
    got = expected_ratings(model, tok, prompts, {r: rating_text(r) for r in scale})

    def naive(prompt: str) -> float:
        p = tok(prompt).input_ids
        logps = []
        for r in scale:
            a = name_tokens(tok, f"{r:g}") + [tok.eos_token_id]
            with torch.no_grad():
                logp = model(torch.tensor([p + a])).logits[0, len(p) - 1 : -1].double().log_softmax(-1)
            logps.append(logp.gather(-1, torch.tensor(a)[:, None]).sum())
        return float((torch.stack(logps).softmax(0) * torch.tensor(scale, dtype=torch.float64)).sum())

    assert got == pytest.approx([naive(p) for p in prompts], abs=1e-4)
    assert all(1 <= g <= 5 for g in got) and len({round(g, 6) for g in got}) == len(
        got
    )  # a mean, not one rating for every prompt


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


def reachable(trie: ItemTrie, prefix: tuple[int, ...] = ()) -> set[int]:
    """Every item a search can complete: the trie walked through next_tokens alone."""
    found = set()
    for t in trie.next_tokens(prefix):
        found |= set(trie.items(prefix + (t,))) if t == trie.end else reachable(trie, prefix + (t,))
    return found


def test_trie_without_items_never_completes_them(tiny):  # noqa: F811
    _, tok = load(str(tiny))
    trie = ItemTrie(NAMES, tok)
    heat = tuple(name_tokens(tok, "Heat (1995)")) + (tok.eos_token_id,)
    assert reachable(trie) == set(NAMES)
    one = trie.without({2, 99})  # 99: not an item of this trie
    assert reachable(one) == {1, 3, 4, 5} and one.items(heat) == [3]  # item 3 has item 2's name
    both = one.without({3})
    assert reachable(both) == {1, 4, 5} and both.items(heat) == []
    assert reachable(trie.without(set(NAMES))) == set() and trie.next_tokens(()) == list(
        dict.fromkeys(trie.next_tokens(()))
    )
    assert reachable(trie) == set(NAMES) and trie.items(heat) == [2, 3]  # views leave the trie as it was


def test_beam_search_returns_k_unseen_items_when_the_history_covers_most(tiny, built):  # noqa: F811
    """20 beams, k = 10, and a history of all but 12 of 60 items: removing the history after the
    search would leave a few items; excluded inside the search, every prompt gets 10."""
    import polars as pl

    model, tok = load(str(tiny))
    items = pl.read_parquet(built[0] / "text" / "items.parquet")
    names = dict(zip(items["item_id"].to_list(), items["name"].to_list()))
    prompts = [p[-n:] for p, n in zip(built[1]["prompt"].head(3).to_list(), (200, 40, 90))]
    history = [set(sorted(names)[12:]), set(sorted(names)[:48]), set(list(names)[::2]) | set(list(names)[1:40:2])]
    ranked, validity = constrained_topk(
        model, tok, prompts, ItemTrie(names, tok), k=10, beams=20, batch_size=2, exclude=history
    )
    for items_, seen in zip(ranked, history, strict=True):
        assert len(items_) == len(set(items_)) == 10 and not set(items_) & seen
    assert validity == 1.0  # more than 20 beams' worth of unseen items: every beam names one
    # Fewer unseen items than beams: each of them, and nothing else.
    ranked, _ = constrained_topk(
        model, tok, prompts[:1], ItemTrie(names, tok), k=10, beams=20, exclude=[set(sorted(names)[5:])]
    )
    assert sorted(ranked[0]) == sorted(names)[:5]


def tokenizers():
    """The tiny test tokenizer; one trained on P5 text, whose merges fuse a name's last character with
    the punctuation after it ("),") as SmolLM2's do; and SmolLM2's own when it is cached."""
    from recpipe.model.load import CACHE

    smollm2 = sorted(CACHE.glob("dequantized/SmolLM2-135M*/tokenizer.json"))
    return [
        "tiny",
        "p5",
        pytest.param(
            smollm2[0].parent if smollm2 else None,
            id="smollm2",
            marks=pytest.mark.skipif(not smollm2, reason="SmolLM2 is not cached"),
        ),
    ]


@pytest.mark.parametrize("indexing", ["names", "random", "sequential", "collaborative"])
@pytest.mark.parametrize("which", tokenizers())
def test_item_name_is_the_same_tokens_in_prompts_targets_trie_and_scoring(which, indexing, tiny, built, tmp_path):  # noqa: F811
    """Every item of the fixture, under each p5.indexing: the tokens of its name or id inside a
    training prompt's history (found by character offsets), the tokens the history-span loss
    labels, the answer tokens `encode` gives when it is the target, the trie's path to it and the
    tokens likelihood_ranking scores are one sequence."""
    import polars as pl
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from conftest import make_tiny_model
    from recpipe.model.decoding import likelihood_ranking
    from recpipe.model.train import encode
    from recpipe.p5.families import build, load_templates
    from recpipe.p5.indexing import item_names
    from recpipe.p5.sample import p5_mixture
    from recpipe.params.p5 import P5Params

    root = built[0]
    inter, items, users = (
        pl.read_parquet(root / d / f"{t}.parquet")
        for d, t in (("tables", "interactions"), ("text", "items"), ("text", "users"))
    )
    families = ["sequential", "direct"]
    p5 = P5Params(
        negatives=10,
        history_targets=True,
        sequential_stride=1,
        k=None,
        families=families,
        indexing=indexing,
        clusters=4,
    )
    names = item_names(items, inter, indexing, 0, clusters=4)
    samples = build(inter, names, users, load_templates("p5", families), families, p5, seed=0, max_rating=5)
    train, _, _ = p5_mixture(samples, p5, 0)
    if which == "tiny":
        model, tok = load(str(tiny))
    else:
        if which == "p5":
            lists = [
                ", ".join(names[i] for i in samples["item_id"][j : j + 10]) + "." for j in range(0, samples.height, 10)
            ]
            which = make_tiny_model(tmp_path, (samples["prompt"] + samples["target"]).to_list() + lists * 3)
        tok = AutoTokenizer.from_pretrained(str(which))
        torch.manual_seed(0)
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tok),
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
            )
        )
    eos = tok.eos_token_id

    in_prompt: dict[int, list[int]] = {}
    as_answer: dict[int, list[int]] = {}
    for row in train.iter_rows(named=True):
        assert (
            row["prompt"] == row["prompt"].rstrip() and row["answer"] == " " + row["target"]
        )  # the answer brings the space
        enc = tok(row["prompt"], return_offsets_mapping=True)
        encoded = encode([row["prompt"]], [row["answer"]], tok, 10**6, [row["spans"]])[0]
        p = len(enc.input_ids)
        for start, end, item in row["spans"]:
            inside = [j for j, (a, b) in enumerate(enc.offset_mapping) if a < end and start < b]
            toks = [enc.input_ids[j] for j in inside]
            assert [encoded["labels"][j] for j in inside] == toks  # the span loss learns exactly these
            assert in_prompt.setdefault(item, toks) == toks  # one form wherever the item is listed
        if row["kind"] == "item":
            assert encoded["input_ids"][-1] == eos
            assert as_answer.setdefault(row["item_id"], encoded["input_ids"][p:-1]) == encoded["input_ids"][p:-1]
    assert len(in_prompt) == len(names) and len(as_answer) > 20  # every item sits in some history
    if (
        indexing == "collaborative"
    ):  # a cluster's items share its path's tokens: the trie branches as the hierarchy does
        for item, toks in in_prompt.items():
            words = names[item].split()
            assert len(words) >= 2 and all(w.startswith("c") for w in words)
            for depth in range(1, len(words)):
                path = name_tokens(tok, " ".join(words[:depth]))
                assert toks[: len(path)] == path, (names[item], tok.convert_ids_to_tokens(toks))

    trie = ItemTrie(names, tok)
    for item, toks in in_prompt.items():
        assert all(toks[n] in trie.next_tokens(tuple(toks[:n])) for n in range(len(toks)))
        assert item in trie.items(tuple(toks) + (eos,)), (names[item], tok.convert_ids_to_tokens(toks))
        assert as_answer.get(item, toks) == toks, (
            names[item],
            tok.convert_ids_to_tokens(as_answer[item]),
            tok.convert_ids_to_tokens(toks),
        )

    scored = []
    # The body sees every pass (the output layer is applied apart, in float32).
    hook = model.get_decoder().register_forward_pre_hook(
        lambda _, args, kwargs: scored.append(kwargs["input_ids"][0].tolist()), with_kwargs=True
    )
    candidates = sorted(in_prompt)
    likelihood_ranking(model, tok, [train["prompt"][0]], [candidates], names, chunk=1)
    hook.remove()
    assert len(scored) == 1 + len(candidates)  # the prompt once, then one pass per candidate
    for item, row in zip(candidates, scored[1:], strict=True):
        assert row[1:] == in_prompt[item] + [eos]  # after the prompt's last token: the name, then EOS
