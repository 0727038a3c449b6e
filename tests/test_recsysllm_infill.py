"""RecSysLLM's blank infilling: whole entities, parts A and B, 2D positions, the 4D mask."""

import random

import pytest
import torch

from recpipe import RecpipeError
from recpipe.recsysllm import infill
from recpipe.recsysllm.infill import END, IGNORE, START, InfillConfig


def word_tokenizer(words: list[str]):
    """One token per word (offsets included), plus the five special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(["<pad>", "<unk>", *words]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    return fast, infill.special_token_ids(fast)


def test_figure_1_of_the_paper_by_hand():
    # x1 x2 x3 form entity e1, x6 x7 entity e2; e1 and x5 are masked (the paper's Figure 1).
    words = [f"x{i}" for i in range(1, 8)]
    tok, ids = word_tokenizer(words)
    text = " ".join(words)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    parts = infill.units(enc.offset_mapping, infill.outer_entities(text, [(0, 8), (15, 20)]))
    assert [(a, b) for a, b, _ in parts] == [(0, 3), (3, 4), (4, 5), (5, 7)]
    intra = [1, 2, 3, 0, 0, 1, 2]
    s = infill.assemble(enc.input_ids, parts, intra, [(0, 1), (2, 3)], ids["[MASK]"], ids)
    x = {w: tok.convert_tokens_to_ids(w) for w in words}
    M, S, E = ids["[MASK]"], ids[START], ids[END]
    assert s["input_ids"] == [M, x["x4"], M, x["x6"], x["x7"], S, x["x1"], x["x2"], x["x3"], E, S, x["x5"], E]
    assert s["position_ids"] == [0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 2, 2, 2]  # part B: its mask's position
    assert s["intra_ids"] == [0, 0, 0, 1, 2, 1, 2, 3, 4, 5, 1, 2, 3]
    assert s["labels"] == [IGNORE] * 5 + [IGNORE, x["x1"], x["x2"], x["x3"], E, IGNORE, x["x5"], E]
    assert s["part_a"] == 5


def random_text(rng: random.Random, n_words: int, prefix: str = "w"):
    """Unique words, some grouped into entities, a full stop now and then."""
    words = [f"{prefix}{i}" + ("." if rng.random() < 0.15 else "") for i in range(n_words)]
    text, spans, i = "", [], 0
    starts = []
    for w in words:
        starts.append(len(text))
        text += w + " "
    text = text.rstrip()
    while i < n_words:
        length = rng.choice([1, 2, 3, 4])
        if rng.random() < 0.5 and i + length <= n_words:
            end = starts[i + length - 1] + len(words[i + length - 1])
            spans.append((starts[i], end))
        i += length
    return words, text, spans


@pytest.mark.parametrize("kind", ["entity", "sentence", "document"])
def test_no_entity_is_ever_split_and_spans_keep_their_order(kind):
    rng = random.Random(0)
    for trial in range(40):
        words, text, spans = random_text(rng, 30)
        tok, ids = word_tokenizer([w.rstrip(".") for w in words] + words)
        config = InfillConfig(objectives=((kind, 1.0),))
        s = infill.build(text, spans, tok, ids, config, random.Random(trial))
        a, seq = s["part_a"], s["input_ids"]
        pieces, cur = [], None
        for t in seq[a:]:
            if t == ids[START]:
                cur = []
            elif t == ids[END]:
                pieces.append(cur)
            else:
                cur.append(t)
        assert pieces, "every text gets at least one span"
        word_of = {tok.convert_tokens_to_ids(w): i for i, w in enumerate(words)}
        for start, end in spans:
            members = {word_of[tok.convert_tokens_to_ids(w)] for w in text[start:end].split()}
            in_a = [word_of[t] in members for t in seq[:a] if t in word_of]
            in_pieces = [sum(word_of.get(t) in members for t in p) for p in pieces]
            assert sum(in_a) in (0, len(members)), "an entity is partly masked"
            assert sum(in_a) == len(members) or max(in_pieces) == len(members), "an entity spread over two spans"
        # chronological: spans in text order, each span's words consecutive, positions rising
        firsts = [word_of[p[0]] for p in pieces]
        assert firsts == sorted(firsts)
        assert all([word_of[t] for t in p] == list(range(word_of[p[0]], word_of[p[0]] + len(p))) for p in pieces)
        mask_positions = [s["position_ids"][i] for i, t in enumerate(seq) if t == ids[START]]
        assert mask_positions == sorted(mask_positions)
        assert all(seq[p] == ids[infill.MASKS[kind]] for p in mask_positions)
        if kind == "document":
            assert len(pieces) == 1 and word_of[pieces[0][-1]] == len(words) - 1
            assert sum(map(len, pieces)) >= len(words) / 2


def test_random_order_shuffles_spans_and_token_masking_splits_entities():
    rng = random.Random(1)
    words, text, spans = random_text(rng, 60)
    tok, ids = word_tokenizer([w.rstrip(".") for w in words] + words)
    orders = set()
    for seed in range(20):
        s = infill.build(text, spans, tok, ids, InfillConfig(order="random", ratio=0.3), random.Random(seed))
        positions = tuple(s["position_ids"][i] for i, t in enumerate(s["input_ids"]) if t == ids[START])
        orders.add(positions == tuple(sorted(positions)))
    assert orders == {True, False}
    # whole_entities false: GLM's token-level masking, where an entity can lose part of its tokens
    middle = text.index(" ", len(text) // 2)
    halves = [(0, middle), (middle + 1, len(text))]
    s = infill.build(text, halves, tok, ids, InfillConfig(), random.Random(0))
    assert s["input_ids"][: s["part_a"]].count(ids["[MASK]"]) == 1
    assert s["input_ids"].count(ids[START]) == 1 and len(s["input_ids"]) - s["part_a"] - 2 in {
        len(text[a:b].split()) for a, b in halves
    }
    s = infill.build(text, halves, tok, ids, InfillConfig(whole_entities=False, span_mean=1), random.Random(0))
    assert s["input_ids"].count(ids[START]) > 1 and len(s["input_ids"]) - s["part_a"] < min(
        len(text[a:b].split()) for a, b in halves
    )


def test_attention_mask_is_bidirectional_over_part_a_and_causal_over_part_b():
    m = infill.attention_mask([3, 2], [6, 4]) == 0
    assert m.shape == (2, 1, 6, 6)
    row = m[0, 0]
    a, n = 3, 6
    for q in range(n):
        for k in range(n):
            expected = k < a or (q >= a and a <= k <= q)
            assert bool(row[q, k]) == expected, (q, k)
    padded = m[1, 0]  # part A 2 tokens, 4 real, 2 padding
    assert not padded[:4, 4:].any(), "no real query sees padding"
    assert padded[4:, :2].all(), "a padding query sees part A (no empty row)"
    assert infill.attention_mask([1], [2], torch.bfloat16).min() == torch.finfo(torch.bfloat16).min


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"objectives": (("words", 1.0),)}, "unknown kind 'words'"),
        ({"objectives": (("entity", 0.0),)}, "positive sum"),
        ({"ratio": 1.5}, "recsysllm.ratio"),
        ({"document": (0.5, 1.2)}, "within (0, 1]"),
        ({"document": (0.0, 0.5)}, "within (0, 1]"),
        ({"order": "backwards"}, "recsysllm.order"),
    ],
)
def test_bad_settings_are_one_line(kwargs, message):
    with pytest.raises(RecpipeError, match=message.replace("(", r"\(").replace("]", r"\]")):
        InfillConfig(**kwargs)


def test_entities_that_do_not_match_the_text_are_one_line():
    with pytest.raises(
        RecpipeError, match=r"users.parquet row 3: entity span \(5, 40\) does not lie inside its text of 10 characters"
    ):
        infill.outer_entities("0123456789", [(5, 40)], "users.parquet row 3")
    with pytest.raises(RecpipeError, match="overlap without nesting"):
        infill.outer_entities("0123456789", [(0, 5), (3, 8)])
    assert infill.outer_entities("0123456789", [(0, 9), (0, 4), (5, 9)]) == [(0, 9)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.conftest import make_tiny_model

    texts = [
        "A 24-year-old man who works as technician. He watched Toy Story (1995), GoldenEye (1995) and Heat (1995)."
    ] * 20
    folder = make_tiny_model(tmp_path_factory.mktemp("tiny"), texts)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = infill.special_token_ids(tok)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    model.resize_token_embeddings(len(tok))
    return model.eval(), tok, ids, texts[0]


def sample(tok, ids, text, seed, **config):
    names = ["24", "technician", "Toy Story (1995)", "GoldenEye (1995)", "Heat (1995)"]
    spans = [(text.index(x), text.index(x) + len(x)) for x in names]
    return infill.build(text, spans, tok, ids, InfillConfig(**config), random.Random(seed))


@torch.no_grad()
def test_the_4d_mask_reaches_the_model(tiny):
    model, tok, ids, text = tiny
    s = sample(tok, ids, text, 0, ratio=0.3)
    a, n = s["part_a"], len(s["input_ids"])
    logits = infill_logits(model, [s])[0]
    # Part A never sees part B: changing a part-B token leaves part A's outputs alone.
    changed = {**s, "input_ids": s["input_ids"][:-1] + [ids["[sMASK]"]]}
    other = infill_logits(model, [changed])[0]
    torch.testing.assert_close(other[:a], logits[:a])
    assert not torch.allclose(other[-1], logits[-1])
    # Part A is bidirectional: its first token sees the last one.
    swapped = {**s, "input_ids": s["input_ids"][: a - 1] + [ids["[gMASK]"]] + s["input_ids"][a:]}
    assert not torch.allclose(infill_logits(model, [swapped])[0][0], logits[0])
    # Part B is causal: a later part-B token does not reach an earlier one.
    torch.testing.assert_close(other[a : n - 1], logits[a : n - 1])
    # Padded in a batch beside a longer sample: the same outputs.
    longer = sample(tok, ids, text + " " + text, 1, ratio=0.3)
    torch.testing.assert_close(infill_logits(model, [s, longer])[0][:n], logits, atol=1e-5, rtol=1e-5)
    # The same with PyTorch's fused attention.
    model.set_attn_implementation("sdpa")
    try:
        torch.testing.assert_close(infill_logits(model, [s])[0], logits, atol=1e-5, rtol=1e-5)
    finally:
        model.set_attn_implementation("eager")


@torch.no_grad()
def test_the_mask_equals_an_explicit_per_row_computation(tiny):
    """One layer's attention recomputed by hand, query by query over the keys it may see."""
    model, tok, ids, text = tiny
    s = sample(tok, ids, text, 2, ratio=0.3)
    batch = infill.collate([s], tok.pad_token_id)
    layer = model.model.layers[0].self_attn
    seen = {}
    hook = layer.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(
            out=out[0], hidden=kwargs["hidden_states"], pos=kwargs["position_embeddings"]
        ),
        with_kwargs=True,
    )
    infill.infill_forward(model, batch)
    hook.remove()
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    h = seen["hidden"][0]
    n, heads, dim = h.shape[0], layer.config.num_attention_heads, layer.head_dim
    q = layer.q_proj(h).view(n, heads, dim).transpose(0, 1)
    k = layer.k_proj(h).view(n, heads, dim).transpose(0, 1)
    v = layer.v_proj(h).view(n, heads, dim).transpose(0, 1)
    cos, sin = seen["pos"]
    q, k = apply_rotary_pos_emb(q[None], k[None], cos, sin)
    q, k = q[0], k[0]
    a = s["part_a"]
    out = torch.zeros(n, heads, dim)
    for i in range(n):
        keys = list(range(a)) + (list(range(a, i + 1)) if i >= a else [])
        w = (q[:, i : i + 1] @ k[:, keys].transpose(-1, -2)) * layer.scaling
        out[i] = (w.softmax(-1) @ v[:, keys])[:, 0]
    expected = layer.o_proj(out.reshape(n, heads * dim))
    torch.testing.assert_close(seen["out"][0], expected, atol=1e-5, rtol=1e-4)


def test_intra_embedding_starts_neutral_and_trains(tiny):
    model, tok, ids, text = tiny
    s = sample(tok, ids, text, 3)
    batch = infill.collate([s], tok.pad_token_id)
    intra = infill.IntraEmbedding(16, model.config.hidden_size)
    with torch.no_grad():
        torch.testing.assert_close(
            infill.infill_forward(model, batch, intra).logits, infill.infill_forward(model, batch).logits
        )
    out = infill.infill_forward(model, batch, intra)
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    loss.backward()
    assert intra.embedding.weight.grad[1:6].abs().sum() > 0


def infill_logits(model, rows):
    return infill.infill_forward(model, infill.collate(rows, 0)).logits


def spans_of(sample: dict, ids: dict) -> list[tuple[int, int]]:
    """(first, end) indices of each part-B piece: [START] up to, not including, [END]."""
    seq, out = sample["input_ids"], []
    for i, t in enumerate(seq):
        if t == ids[START]:
            out.append((i, seq.index(ids[END], i)))
    return out


def test_trie_driven_intra_ids_equal_the_training_paths():
    rng = random.Random(5)
    texts = [random_text(rng, 40, f"t{i}w") for i in range(10)]
    tok, ids = word_tokenizer(
        [w for words, _, _ in texts for w in words] + [w.rstrip(".") for words, _, _ in texts for w in words]
    )
    trie = infill.entity_trie([(text, spans) for _, text, spans in texts], tok)
    checked = multi = 0
    for seed, (_, text, spans) in enumerate(texts * 3):
        s = infill.build(text, spans, tok, ids, InfillConfig(ratio=0.3, span_mean=3), random.Random(seed))
        for first, end in spans_of(s, ids):
            generated = s["input_ids"][first + 1 : end]
            assert infill.dynamic_intra(generated, trie) == s["intra_ids"][first:end]
            checked += 1
            multi += s["intra_ids"][first + 2 : end].count(1) > 0  # a span of several units
    assert checked > 50 and multi > 10


def test_dynamic_intra_by_hand():
    trie = infill.entity_trie([("a b c d e", [(0, 5), (6, 7)])], word_tokenizer(list("abcdef"))[0])
    tok, _ = word_tokenizer(list("abcdef"))
    a, b, c, d, e, f = (tok.convert_tokens_to_ids(x) for x in "abcdef")
    # entities: "a b c" and "d"; [START] a b c f d e -> 1, 2 3 4 (a b c continue), f restarts, d restarts, e restarts
    assert infill.dynamic_intra([a, b, c, f, d, e], trie) == [1, 2, 3, 4, 1, 1, 1]
    assert infill.dynamic_intra([f, a, b], trie) == [1, 2, 1, 2]


def test_cached_infilling_follows_the_training_forward(tiny):
    model, tok, ids, text = tiny
    names = ["24", "technician", "Toy Story (1995)", "GoldenEye (1995)", "Heat (1995)"]
    spans = [(text.index(x), text.index(x) + len(x)) for x in names]
    trie = infill.entity_trie([(text, spans)], tok)
    s = sample(tok, ids, text, 4, ratio=0.3)
    a = s["part_a"]
    part_a = {"input_ids": s["input_ids"][:a], "intra_ids": s["intra_ids"][:a]}
    mask_position = s["input_ids"].index(ids["[MASK]"])
    intra = infill.IntraEmbedding(16, model.config.hidden_size)
    torch.nn.init.normal_(intra.embedding.weight, std=0.5)  # as if trained: the ids must matter
    tokens, intra_ids = infill.fill_blank(model, part_a, mask_position, trie, ids, intra, max_new_tokens=6)
    assert len(tokens) >= 1 and len(intra_ids) == len(tokens) + 1
    # One forward over part A + [START] + the generated tokens, as training runs it, picks the same tokens.
    full = {
        "input_ids": part_a["input_ids"] + [ids[START], *tokens],
        "labels": [IGNORE] * (a + 1 + len(tokens)),
        "position_ids": [*range(a), *[mask_position] * (len(tokens) + 1)],
        "intra_ids": part_a["intra_ids"] + intra_ids,
        "part_a": a,
    }
    with torch.no_grad():
        logits = infill.infill_forward(model, infill.collate([full], 0), intra).logits[0]
    assert logits[a:-1].argmax(-1).tolist() == tokens
