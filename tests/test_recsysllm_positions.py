"""Intra positions in fine-tuning and scoring (recsysllm.dynamic_positions): the trie decides each
token's id as inference writes it, and those are the ids training gives the same text; switched
off, the model runs as a plain one."""

import random

import polars as pl
import pytest
import torch

from conftest import params_dict, source
from recpipe import RecpipeError
from recpipe.model.decoding import ItemTrie, constrained_beams, generate, likelihood_ranking, name_tokens
from recpipe.model.train import PadCollator, answer_loss, answer_task
from recpipe.params import schema as params
from recpipe.recsysllm import infill
from recpipe.recsysllm.positions import (
    OUTSIDE,
    EntityPositions,
    Positions,
    advance,
    running_intra,
)
from recpipe.recsysllm.pretrain import INTRA
from recpipe.tallrec.evaluate import score
from test_recsysllm_infill import random_text, word_tokenizer


def test_by_hand():
    tok, _ = word_tokenizer(list("abcdef"))
    trie = infill.entity_trie([("a b c d e", [(0, 5), (6, 7)])], tok)
    a, b, c, d, e, f = (tok.convert_tokens_to_ids(x) for x in "abcdef")
    # entities "a b c" and "d": f and e lie outside; a restarts an entity; d after c begins one.
    assert running_intra([f, a, b, c, d, e, a, f], trie)[0] == [0, 1, 2, 3, 1, 0, 1, 0]
    assert running_intra([a, b, a], trie)[0] == [1, 2, 1]


def test_on_text_whose_other_tokens_begin_no_entity_the_ids_are_part_as():
    """Handmade entity sets: the trie's ids over a text equal the ids pretraining's part A takes
    from the entity spans (every word unique, so no word outside an entity begins one)."""
    rng = random.Random(3)
    texts = [random_text(rng, 40, f"t{i}w") for i in range(8)]
    tok, ids = word_tokenizer([w for words, _, _ in texts for w in words])
    trie = infill.entity_trie([(text, spans) for _, text, spans in texts], tok)
    for _, text, spans in texts:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        parts = infill.units(enc.offset_mapping, infill.outer_entities(text, spans))
        intra = [0] * len(enc.input_ids)
        for start, end, is_entity in parts:
            if is_entity:
                intra[start:end] = range(1, end - start + 1)
        part_a = infill.assemble(enc.input_ids, parts, intra, [], ids["[MASK]"], ids)  # nothing masked: the text itself
        assert running_intra(enc.input_ids, trie)[0] == part_a["intra_ids"]
        assert max(part_a["intra_ids"]) >= 3


def test_token_by_token_ids_equal_the_ids_of_the_whole_text():
    """Inference carries the state after the prompt and advances it per written token; training
    reads prompt + answer at once: the same ids, wherever the prompt ends (mid-entity included)."""
    rng = random.Random(7)
    texts = [random_text(rng, 30, f"t{i}w") for i in range(6)]
    tok, _ = word_tokenizer([w for words, _, _ in texts for w in words])
    trie = infill.entity_trie([(text, spans) for _, text, spans in texts], tok)
    for _, text, _ in texts:
        tokens = tok(text, add_special_tokens=False).input_ids
        whole = running_intra(tokens, trie)[0]
        for cut in range(len(tokens)):
            ids, state = running_intra(tokens[:cut], trie)
            for token in tokens[cut:]:
                state = advance(trie, state, token)
                ids.append(state[1])
            assert ids == whole


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.conftest import make_tiny_model

    texts = [
        "A 24-year-old technician watched Toy Story (1995), GoldenEye (1995) and Heat (1995). Next: Heat (1995) Yes No"
    ] * 20
    folder = make_tiny_model(tmp_path_factory.mktemp("tiny"), texts)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    names = {1: "Toy Story (1995)", 2: "GoldenEye (1995)", 3: "Heat (1995)"}
    text = texts[0]
    spans = [(text.index(n), text.index(n) + len(n)) for n in names.values()]
    trie = infill.entity_trie([(text, spans), *[(" " + n, [(1, len(n) + 1)]) for n in names.values()]], tok)
    return model, tok, trie, names


def with_intra(model, std: float):
    """The model with an intra embedding attached, as a pretraining with 2D positions leaves it."""
    intra = infill.IntraEmbedding(16, model.config.hidden_size)
    torch.manual_seed(1)
    torch.nn.init.normal_(intra.embedding.weight, std=std)
    model.add_module(INTRA, intra)
    return intra


@torch.no_grad()
def full_logits(model, ids: list[int], intra_ids: list[int] | None, intra) -> torch.Tensor:
    """One plain forward over the whole text, as training runs it."""
    x = torch.tensor([ids])
    if intra is None:
        return model(input_ids=x).logits[0]
    embeds = model.get_input_embeddings()(x) + intra(torch.tensor([intra_ids]))
    return model(inputs_embeds=embeds).logits[0]


PROMPTS = ["A 24-year-old technician watched Toy Story (1995), GoldenEye", "watched Heat (1995). Next:", "Toy"]


def test_generation_writes_what_the_training_forward_predicts(tiny):
    """Greedy generation (batched, left-padded, cached) with intra ids decided token by token
    writes what repeated plain forwards over prompt + written tokens, with the ids training gives
    that text, pick one token at a time."""
    model, tok, trie, _ = tiny
    intra = with_intra(model, 0.5)
    try:
        positions = Positions(trie, intra)
        answers = generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=2, positions=positions)
        assert answers != generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=2)  # the intra ids matter
        for prompt, answer in zip(PROMPTS, answers):
            text = tok(prompt).input_ids
            written = []
            while (
                len(written) < 8
                and (token := int(full_logits(model, text, positions.run(text)[0], intra)[-1].argmax()))
                != tok.eos_token_id
            ):
                written.append(token)
                text = text + [token]
            assert tok.decode(written, skip_special_tokens=True).strip() == answer
    finally:
        delattr(model, INTRA)


def test_likelihood_ranking_scores_as_the_training_forward(tiny):
    model, tok, trie, names = tiny
    intra = with_intra(model, 0.5)
    try:
        positions = Positions(trie, intra)
        prompt = PROMPTS[1]
        cands = sorted(names)
        ranked = likelihood_ranking(model, tok, [prompt], [cands], names, chunk=2, positions=positions)[0]
        p = tok(prompt).input_ids
        scores = {}
        for c in cands:
            answer = name_tokens(tok, names[c]) + [tok.eos_token_id]
            text = p + answer
            logp = full_logits(model, text, positions.run(text)[0], intra).log_softmax(-1)
            scores[c] = logp[len(p) - 1 : -1].gather(-1, torch.tensor(answer)[:, None]).mean().item()
        assert ranked == sorted(cands, key=lambda c: (-scores[c], c))
    finally:
        delattr(model, INTRA)


def test_scoring_switched_off_or_with_a_zero_embedding_is_plain(tiny):
    """Off: scores equal the plain model's exactly; on with a zero embedding: the same up to float
    rounding (the embeddings path is the ids path); on with a trained one: different scores."""
    model, tok, trie, _ = tiny
    yes, no = tok(" Yes", add_special_tokens=False).input_ids[0], tok(" No", add_special_tokens=False).input_ids[0]
    prompts = [p + " Heat (1995)" for p in PROMPTS]
    plain = score(model, tok, prompts, yes, no, batch_size=2)
    intra = with_intra(model, 0.0)
    try:
        assert score(model, tok, prompts, yes, no, batch_size=2) == plain
        torch.testing.assert_close(
            score(model, tok, prompts, yes, no, batch_size=2, positions=Positions(trie, intra)), plain
        )
        torch.nn.init.normal_(intra.embedding.weight, std=0.5)
        on = score(model, tok, prompts, yes, no, batch_size=2, positions=Positions(trie, intra))
        assert all(abs(a - b) > 1e-6 for a, b in zip(on, plain))
        # Each prompt scored alone (no shared prefix, no padding) gives the same.
        torch.testing.assert_close(
            on, [score(model, tok, [q], yes, no, batch_size=1, positions=Positions(trie, intra))[0] for q in prompts]
        )
    finally:
        delattr(model, INTRA)


def test_training_rows_carry_the_ids_and_the_loss_adds_them(tiny, tmp_path):
    model, tok, trie, _ = tiny
    frame = pl.DataFrame({"prompt": [p + " Answer:" for p in PROMPTS], "answer": [" Yes", " No", " Yes"]})
    frame.write_parquet(tmp_path / "shots.parquet")
    intra = with_intra(model, 0.5)
    try:
        task = answer_task(
            tmp_path / "shots.parquet", tmp_path / "shots.parquet", 256, lambda m, t: Positions(trie, intra)
        )(model, tok)
        assert all(r["intra_ids"] == running_intra(r["input_ids"], trie)[0] for r in task.rows + task.valid)
        batch = task.collate(task.rows)
        loss, n, _ = task.loss(model, batch)  # shared prefix cached, then each row
        explicit = 0.0
        for r in task.rows:
            logp = full_logits(model, r["input_ids"], r["intra_ids"], intra).log_softmax(-1)
            explicit -= sum(
                logp[j - 1, r["input_ids"][j]].item() for j, label in enumerate(r["labels"]) if j and label != -100
            )
        assert abs(loss.item() - explicit) < 1e-3 and n > 0
        # Without positions: plain rows, no intra ids, the plain loss.
        plain = answer_task(tmp_path / "shots.parquet", tmp_path / "shots.parquet", 256, lambda m, t: None)(model, tok)
        assert "intra_ids" not in plain.rows[0] and "intra_ids" not in PadCollator(0)(plain.rows)
        assert plain.loss is answer_loss and not torch.equal(
            answer_loss(model, PadCollator(tok.pad_token_id)(plain.rows))[0], loss
        )
    finally:
        delattr(model, INTRA)


def test_entity_positions_need_an_intra_embedding_and_the_corpus(tiny, tmp_path):
    model, tok, _, _ = tiny
    factory = EntityPositions(tmp_path / "corpus.parquet")
    assert factory(model, tok) is None  # no intra embedding: plain
    intra = with_intra(model, 0.5)
    try:
        with pytest.raises(RecpipeError, match="recsysllm.dynamic_positions: no pretraining corpus at"):
            factory(model, tok)
        text = "He watched Heat (1995)."
        spans = pl.Series([[{"start": 11, "end": 22}]])
        pl.DataFrame({"user_id": [1], "text": [text], "spans": spans}).write_parquet(tmp_path / "corpus.parquet")
        positions = factory(model, tok)
        assert positions.embedding is intra
        heat = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        inside = [s < 22 and 11 < e for s, e in heat.offset_mapping]  # the tokens that overlap the entity
        assert positions.run(heat.input_ids)[0] == [0] * inside.index(True) + list(range(1, sum(inside) + 1)) + [0] * (
            len(inside) - inside.index(True) - sum(inside)
        )
        assert running_intra([], positions.trie) == ([], OUTSIDE)
    finally:
        delattr(model, INTRA)


def test_beam_search_with_dynamic_positions_ranks_as_the_training_forward(tiny):
    """With a beam for every item, beam search with intra positions finishes every item, ranked as
    likelihood ranking (whose scores equal the training forward's, above) ranks them."""
    model, tok, trie, names = tiny
    intra = with_intra(model, 0.5)
    try:
        positions = Positions(trie, intra)
        items = ItemTrie(names, tok)
        cands = sorted(names)
        for prompt in PROMPTS:
            beams = constrained_beams(model, tok, [prompt], items, beams=len(names) + 1, positions=positions)[0]
            assert [i for n in beams for i in n] == likelihood_ranking(
                model, tok, [prompt], [cands], names, positions=positions
            )[0]
        plain = [constrained_beams(model, tok, [p], items, beams=len(names) + 1)[0] for p in PROMPTS]
        assert plain != [
            constrained_beams(model, tok, [p], items, beams=len(names) + 1, positions=positions)[0] for p in PROMPTS
        ]  # the ids matter
    finally:
        delattr(model, INTRA)


def test_dynamic_positions_take_either_ranking(archives):
    src = [source("atomic", archives["atomic"])]
    recsysllm = {"datasets": ["ml-100k"]}
    on = params.parse(
        params_dict(
            src,
            recsysllm=recsysllm,
            p5={"datasets": ["ml-100k"], "train": {"init": "pretrained"}, "sequential_ranking": "beam"},
        )
    )
    assert on.recsysllm.intra_positions("pretrained") and not on.recsysllm.intra_positions("base")
    off = params.parse(
        params_dict(
            src,
            recsysllm={**recsysllm, "dynamic_positions": False},
            p5={"datasets": ["ml-100k"], "train": {"init": "pretrained"}},
        )
    )
    assert not off.recsysllm.intra_positions("pretrained")
    assert not params.parse(params_dict(src, recsysllm={**recsysllm, "positions_2d": False})).recsysllm.intra_positions(
        "pretrained"
    )
