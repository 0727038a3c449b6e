"""CoLLM's collaborative tokens (recpipe.model.collab) on a tiny random Llama: the projected CF
vectors reach the model at the placeholders and nowhere else, in training and in scoring; the
two-step and one-step recipes train what they should; a saved adapter folder scores as the model
it was saved from."""

import json
from contextlib import contextmanager

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_model
from recpipe import RecpipeError
from recpipe.model.collab import (
    PLACEHOLDER,
    PROJECTOR,
    CollabCollator,
    add_projector,
    attach_projector,
    collab_embeds,
    collab_loss,
    collab_task,
    encode_collab,
    placeholder_tokens,
    projector_of,
    split_projector,
)
from recpipe.model.load import answer_token_ids, load
from recpipe.model.train import IGNORE, add_lora, encode, freeze_lora, load_lora, train
from recpipe.params.collab import CollabParams
from recpipe.params.model import ModelParams
from recpipe.params.train import LoraParams, TrainParams
from recpipe.tallrec.evaluate import score, valid_auc

CF_DIM = 4
LORA = LoraParams(rank=4, alpha=8)
INSTRUCTION = '### Instruction:\nDecide whether the user will enjoy the target movie. Answer with "Yes." or "No." only.\n\n### Input:\n'
TITLES = ["Heat (1995)", "Dr. No (1962)", "Casino (1995)", "Fargo (1996)", "Alien (1979)", "Babe (1995)"]


def prompt(user: int, item: int, collab: bool) -> str:
    liked = ", ".join(TITLES[(user + k) % len(TITLES)] for k in range(1 + user % 3))
    user_feature = f" The user's feature: {PLACEHOLDER}." if collab else ""
    item_feature = f" with the feature{PLACEHOLDER}" if collab else ""  # no space: the tokenizer would merge
    return (
        f"{INSTRUCTION}Movies the user liked: {liked}.{user_feature}\n"
        f"Will the user enjoy {TITLES[item % len(TITLES)]}{item_feature}?\n\n### Response:\n"
    )


def samples(n: int, offset: int, collab: bool, user: int | None = None) -> pl.DataFrame:
    """n samples; `user`: all of one user, whose prompts then share their text up to the item."""
    users = [(offset + i) % 7 if user is None else user for i in range(n)]
    items = [(offset + 3 * i) % 11 for i in range(n)]
    labels = [(u + i) % 2 for u, i in zip(users, items)]
    return pl.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "prompt": [prompt(u, i, collab) for u, i in zip(users, items)],
            "answer": ["Yes." if label else "No." for label in labels],
            "label": labels,
        }
    )


def cf_vector(kind: int, key: int) -> torch.Tensor:
    return torch.randn(CF_DIM, generator=torch.Generator().manual_seed(1000 * kind + key))


def cf_vectors(frame: pl.DataFrame) -> list[torch.Tensor]:
    """What a CF model would give: the user's vector, then the item's (the placeholders' order)."""
    return [
        torch.stack([cf_vector(1, u), cf_vector(2, i)]) for u, i in zip(frame["user_id"].to_list(), frame["item_id"])
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    frames = [samples(40, 0, False), samples(40, 0, True)]
    texts = [t for f in frames for t in (f["prompt"] + f["answer"]).to_list()]
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), texts)


def with_projector(tiny):
    model, tok = load(str(tiny))
    torch.manual_seed(0)
    add_projector(model, CF_DIM, mid_times=2)
    return model.eval(), tok


@contextmanager
def first_layer_inputs(model):
    """The hidden states each pass feeds the first decoder layer, appended to the list yielded."""
    seen = []
    hook = model.model.layers[0].register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
    )
    try:
        yield seen
    finally:
        hook.remove()


@torch.no_grad()
def by_hand(model, tok, text: str, vectors: torch.Tensor, answer: str = "", shift: int = 0) -> torch.Tensor:
    """The input embeddings of a prompt (+ answer tokens) built by hand: each piece's token
    embeddings, a projected vector between two (shift 1: one position later, after the next
    piece's first token, where a wrong placement would put it)."""
    parts = text.split(PLACEHOLDER)
    embed, projector = model.get_input_embeddings(), projector_of(model)
    out = [embed(torch.tensor(tok(parts[0]).input_ids))]
    for v, part in zip(vectors, parts[1:]):
        tokens = embed(torch.tensor(tok(part, add_special_tokens=False).input_ids, dtype=torch.long))
        out += [tokens[:shift], projector(v[None]), tokens[shift:]]
    if answer:
        out.append(embed(torch.tensor(tok(answer, add_special_tokens=False).input_ids + [tok.eos_token_id])))
    return torch.cat(out)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-6)


def test_each_placeholder_is_one_position_whatever_the_tokenizer_merges(tiny):
    _, tok = load(str(tiny))
    assert len(tok(PLACEHOLDER, add_special_tokens=False).input_ids) > 1  # as plain text it would be several
    text = prompt(2, 5, collab=True)
    ids, at = placeholder_tokens(tok, text)
    first, user, item = text.split(PLACEHOLDER)
    expected = tok(first).input_ids + [tok.pad_token_id] + tok(user, add_special_tokens=False).input_ids
    assert at == [len(tok(first).input_ids), len(expected)]
    assert ids == expected + [tok.pad_token_id] + tok(item, add_special_tokens=False).input_ids
    plain = prompt(2, 5, collab=False)
    assert placeholder_tokens(tok, plain) == (tok(plain).input_ids, [])


def test_projected_vectors_reach_the_first_layer_at_the_placeholders_only(tiny):
    model, tok = with_projector(tiny)
    frame = samples(2, 3, True)
    rows = encode_collab(frame["prompt"].to_list(), frame["answer"].to_list(), cf_vectors(frame), tok, 512)
    batch = CollabCollator(tok.pad_token_id)(rows)
    with first_layer_inputs(model) as seen, torch.no_grad():
        embeds = collab_embeds(model, batch["input_ids"], batch["collab_at"], batch["collab_vectors"])
        model(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
        projected = projector_of(model)(batch["collab_vectors"])
        tokens = model.get_input_embeddings()(batch["input_ids"])
    hidden = seen[0]
    rows_at, cols_at = batch["collab_at"].T
    assert len(cols_at) == 4 and torch.equal(hidden[rows_at, cols_at], projected)
    is_placeholder = torch.zeros(hidden.shape[:2], dtype=torch.bool)
    is_placeholder[rows_at, cols_at] = True
    assert torch.equal(hidden[~is_placeholder], tokens[~is_placeholder])  # every other position: its token
    assert not torch.equal(hidden[rows_at, cols_at + 1], projected)


def test_scoring_feeds_the_model_the_hand_built_embeddings(tiny):
    """Left-padded batches after a shared instruction run once through the prefix cache: each
    prompt's embeddings are the prefix pass's, then the last columns of its row in a batch pass."""
    model, tok = with_projector(tiny)
    yes, no = answer_token_ids(tok, "Yes.", "No.")
    frame = samples(5, 1, True, user=3)  # of different lengths, the same up to the item
    prompts, vectors = frame["prompt"].to_list(), cf_vectors(frame)
    with first_layer_inputs(model) as seen:
        scored = score(model, tok, prompts, yes, no, batch_size=3, collab_vectors=vectors)
    prefix, passes = seen[0][0], seen[1:]
    rows = [row for batch in passes for row in batch]
    assert len(seen[0]) == 1 and len(passes) == 2 and len(rows) == 5
    assert 0 < len(prefix) <= placeholder_tokens(tok, prompts[0])[1][0]  # up to the first placeholder
    with torch.no_grad():
        plain = [
            torch.softmax(model(inputs_embeds=by_hand(model, tok, p, v)[None]).logits[0, -1, [yes, no]], -1)[0]
            for p, v in zip(prompts, vectors)
        ]
    for p, v in zip(prompts, vectors):
        want, shifted = by_hand(model, tok, p, v), by_hand(model, tok, p, v, shift=1)
        assert close(want[: len(prefix)], prefix)
        tail = len(want) - len(prefix)
        assert sum(close(row[-tail:], want[len(prefix) :]) for row in rows) == 1
        assert not any(close(row[-tail:], shifted[len(prefix) :]) for row in rows)
    assert torch.allclose(torch.tensor(scored), torch.stack(plain), atol=1e-6)


def test_training_feeds_the_model_the_hand_built_embeddings(tiny):
    """Right-padded rows after a shared instruction (the prefix cache): each row's embeddings are
    the prefix pass's, then the first columns of its row; the loss is a plain pass's."""
    model, tok = with_projector(tiny)
    frame = samples(3, 2, True, user=3)  # the same up to the item
    prompts, answers, vectors = frame["prompt"].to_list(), frame["answer"].to_list(), cf_vectors(frame)
    batch = CollabCollator(tok.pad_token_id)(encode_collab(prompts, answers, vectors, tok, 512))
    with first_layer_inputs(model) as seen, torch.no_grad():
        loss, count, _ = collab_loss(model, batch)
    prefix, rest = seen[0][0], seen[1]
    assert 0 < len(prefix) <= int(batch["collab_at"][:, 1].min()) and len(rest) == 3
    total = 0.0
    for row, p, a, v in zip(rest, prompts, answers, vectors):
        want, shifted = by_hand(model, tok, p, v, a), by_hand(model, tok, p, v, a, shift=1)
        assert close(want[: len(prefix)], prefix)
        assert close(row[: len(want) - len(prefix)], want[len(prefix) :])
        assert not close(row[: len(want) - len(prefix)], shifted[len(prefix) :])
        answer = tok(a, add_special_tokens=False).input_ids + [tok.eos_token_id]
        with torch.no_grad():
            logits = model(inputs_embeds=want[None]).logits[0, -len(answer) - 1 : -1]
        total += torch.nn.functional.cross_entropy(logits, torch.tensor(answer), reduction="sum").item()
    assert count == sum(len(tok(a, add_special_tokens=False).input_ids) + 1 for a in answers)
    assert loss.item() == pytest.approx(total, rel=1e-5)


def test_without_placeholders_the_collab_path_is_the_plain_one(tiny):
    model, tok = with_projector(tiny)
    yes, no = answer_token_ids(tok, "Yes.", "No.")
    frame = samples(4, 0, False)
    prompts, answers = frame["prompt"].to_list(), frame["answer"].to_list()
    none = [torch.zeros(0, CF_DIM)] * len(prompts)
    plain = score(model, tok, prompts, yes, no, batch_size=4)
    assert score(model, tok, prompts, yes, no, batch_size=4, collab_vectors=none) == plain
    rows = encode_collab(prompts, answers, none, tok, 512)
    assert [{k: r[k] for k in ("input_ids", "labels")} for r in rows] == encode(prompts, answers, tok, 512)


def test_a_sample_whose_vectors_do_not_match_its_placeholders_is_named(tiny):
    model, tok = with_projector(tiny)
    frame = samples(3, 0, True)
    vectors = cf_vectors(frame)
    vectors[1] = vectors[1][:1]
    with pytest.raises(RecpipeError, match=r"sample 1 has 2 placeholders .* shape \(1, 4\)"):
        score(model, tok, frame["prompt"].to_list(), 5, 6, batch_size=2, collab_vectors=vectors)
    vectors[1] = torch.zeros(2, CF_DIM + 1)
    with pytest.raises(RecpipeError, match="sample 1 has CF vectors of width 5, sample 0 of width 4"):
        encode_collab(frame["prompt"].to_list(), frame["answer"].to_list(), vectors, tok, 512)


def test_a_long_prompt_loses_its_start_with_the_placeholders_in_it(tiny):
    _, tok = load(str(tiny))
    frame = samples(1, 0, True)
    (p,), (a,), (v,) = frame["prompt"].to_list(), frame["answer"].to_list(), cf_vectors(frame)
    full = encode_collab([p], [a], [v], tok, 512)[0]
    _, item_at = full["collab_at"]
    cut = len(full["input_ids"]) - item_at + 1  # the prompt keeps the token before the item's placeholder on
    row = encode_collab([p], [a], [v], tok, cut)[0]
    assert row["input_ids"] == full["input_ids"][-cut:] and row["collab_at"] == [1]
    assert torch.equal(row["collab"], v[1:]) and row["labels"][:2] == [IGNORE, IGNORE]


def step1_like_adapter(tiny, folder):
    """A saved LoRA adapter with non-zero weights (what step 1 leaves)."""
    model, _ = load(str(tiny))
    model = add_lora(model, LORA)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    model.save_pretrained(folder)
    return folder


def test_step2_gives_the_projector_gradients_and_the_lora_weights_none(tiny, tmp_path):
    start = step1_like_adapter(tiny, tmp_path / "step1")
    model, tok = with_projector(tiny)
    model = add_lora(model, LORA, modules_to_save=[PROJECTOR])
    load_lora(model, start, LORA)
    freeze_lora(model)
    model.train()
    frame = samples(4, 0, True)
    rows = encode_collab(frame["prompt"].to_list(), frame["answer"].to_list(), cf_vectors(frame), tok, 512)
    loss, count, _ = collab_loss(model, CollabCollator(tok.pad_token_id)(rows))
    (loss / count).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if "lora_" in name or PROJECTOR in name}
    trained = [n for n in grads if f"{PROJECTOR}.modules_to_save" in n]
    assert len(trained) == 4 and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in trained)
    lora = [n for n in grads if "lora_" in n]
    assert lora and all(grads[n] is None for n in lora)
    saved = load_file(start / "adapter_model.safetensors")
    state = dict(model.named_parameters())
    assert all(torch.equal(state[k.replace(".weight", ".default.weight")], v) for k, v in saved.items())


def test_lora_weights_start_only_from_an_adapter_of_the_same_shape(tiny, tmp_path):
    start = step1_like_adapter(tiny, tmp_path / "step1")
    model, _ = load(str(tiny))
    model = add_lora(model, LoraParams(rank=2, alpha=8))
    with pytest.raises(RecpipeError, match="same LoRA params"):
        load_lora(model, start, LoraParams(rank=2, alpha=8))


def test_saved_adapter_and_projector_score_as_before(tiny, tmp_path):
    from peft import PeftModel

    start = step1_like_adapter(tiny, tmp_path / "step1")
    model, tok = with_projector(tiny)
    model = add_lora(model, LORA, modules_to_save=[PROJECTOR])
    load_lora(model, start, LORA)
    with torch.no_grad():  # a projector that differs from a fresh one
        for name, param in model.named_parameters():
            if f"{PROJECTOR}.modules_to_save" in name:
                param.add_(0.1)
    yes, no = answer_token_ids(tok, "Yes.", "No.")
    frame = samples(6, 4, True)
    prompts, vectors = frame["prompt"].to_list(), cf_vectors(frame)
    before = score(model, tok, prompts, yes, no, batch_size=4, collab_vectors=vectors)
    model.save_pretrained(tmp_path / "saved")
    split_projector(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "adapter_config.json").read_text())
    assert config["modules_to_save"] is None
    assert not any(PROJECTOR in k for k in load_file(tmp_path / "saved" / "adapter_model.safetensors"))
    dims = json.loads((tmp_path / "saved" / f"{PROJECTOR}.json").read_text())
    assert dims == {"cf_dim": CF_DIM, "mid_dim": 2 * CF_DIM, "hidden_size": 32}

    base, _ = load(str(tiny))
    reloaded = attach_projector(PeftModel.from_pretrained(base, str(tmp_path / "saved")), tmp_path / "saved")
    assert score(reloaded, tok, prompts, yes, no, batch_size=4, collab_vectors=vectors) == before
    base, _ = load(str(tiny))
    merged = attach_projector(
        PeftModel.from_pretrained(base, str(tmp_path / "saved")).merge_and_unload(), tmp_path / "saved"
    )
    assert torch.allclose(
        torch.tensor(score(merged, tok, prompts, yes, no, batch_size=4, collab_vectors=vectors)),
        torch.tensor(before),
        atol=1e-5,
    )


# The recipes through train(), as the pipeline runs them.


def run(tiny, root, name, data, task=None, validate=None):
    return train(
        data / "train.parquet",
        data / "valid.parquet",
        root / name,
        root / f"{name}.json",
        ModelParams(name=str(tiny), device="cpu"),
        LORA,
        TrainParams(epochs=2, batch_size=4, lr=1e-2, dtype="float32", warmup_steps=0),
        seed=0,
        live_dir=root / f"live-{name}",
        checkpoints=root / "ckpt",
        task=task,
        validate=validate,
    )


def remembering_projector(builder, store: dict):
    """The task builder, keeping a copy of the projector it put on the model (before any training)."""

    def build(model, tokenizer):
        task = builder(model, tokenizer)
        store.update({k: v.detach().clone() for k, v in projector_of(model).state_dict().items()})
        return task

    return build


@pytest.fixture(scope="module")
def recipes(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    for name, collab in (("text", False), ("hybrid", True)):
        (root / name).mkdir()
        samples(16, 0, collab).write_parquet(root / name / "train.parquet")
        samples(8, 5, collab).write_parquet(root / name / "valid.parquet")
    out = {"root": root, "step1": run(tiny, root, "step1", root / "text")}
    hybrid = root / "hybrid"
    for name, params, start in (
        ("step2", CollabParams(recipe="two_step", mid_times=2), root / "step1"),
        ("one_step", CollabParams(recipe="one_step", mid_times=2), None),
    ):
        task = collab_task(hybrid / "train.parquet", hybrid / "valid.parquet", 256, cf_vectors, params, start)
        out[f"{name}_start"] = {}
        validate = valid_auc("tallrec", 8, collab=cf_vectors)
        out[name] = run(tiny, root, name, hybrid, remembering_projector(task, out[f"{name}_start"]), validate)
    return out


def lora_weights(folder) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(folder / "adapter_model.safetensors").items() if "lora_" in k}


def changed(start: dict, folder) -> bool:
    saved = load_file(folder / f"{PROJECTOR}.safetensors")
    assert saved.keys() == start.keys()
    return any(not torch.equal(saved[k], start[k]) for k in start)


def test_step1_trains_lora_on_text_prompts_and_has_no_projector(recipes):
    step1 = recipes["root"] / "step1"
    assert not (step1 / f"{PROJECTOR}.safetensors").exists() and not (step1 / f"{PROJECTOR}.json").exists()
    assert json.loads((step1 / "adapter_config.json").read_text())["modules_to_save"] is None
    assert any(v.abs().sum() > 0 for k, v in lora_weights(step1).items() if "lora_B" in k)  # B starts at 0


def test_step2_keeps_step1s_lora_and_trains_the_projector(recipes):
    root = recipes["root"]
    step1, step2 = lora_weights(root / "step1"), lora_weights(root / "step2")
    assert step1.keys() == step2.keys() and all(torch.equal(step1[k], step2[k]) for k in step1)
    assert changed(recipes["step2_start"], root / "step2")
    assert json.loads((root / "step2" / "adapter_config.json").read_text())["modules_to_save"] is None


def test_one_step_trains_lora_and_projector_together(recipes):
    root = recipes["root"]
    weights = lora_weights(root / "one_step")
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    assert changed(recipes["one_step_start"], root / "one_step")


def test_a_saved_step2_folder_scores_as_the_trained_model(recipes, tiny):
    from peft import PeftModel

    from recpipe.metrics import auc_metrics

    root = recipes["root"]
    base, tok = load(str(tiny))
    model = attach_projector(PeftModel.from_pretrained(base, str(root / "step2")), root / "step2")
    valid = pl.read_parquet(root / "hybrid" / "valid.parquet")
    yes, no = answer_token_ids(tok, "Yes.", "No.")
    p_yes = score(model, tok, valid["prompt"].to_list(), yes, no, 8, collab_vectors=cf_vectors(valid))
    assert auc_metrics(valid["label"].to_list(), p_yes)["auc"] == recipes["step2"]["valid_auc"]


def test_two_step_needs_step1s_adapter_and_one_step_none(tmp_path):
    with pytest.raises(RecpipeError, match="two_step: step 2 starts from step 1's adapter"):
        collab_task("t", "v", 64, cf_vectors, CollabParams(recipe="two_step"))
    with pytest.raises(RecpipeError, match="one_step trains a fresh adapter"):
        collab_task("t", "v", 64, cf_vectors, CollabParams(recipe="one_step"), tmp_path)
    with pytest.raises(RecpipeError, match="no step 1 adapter"):
        collab_task("t", "v", 64, cf_vectors, CollabParams(recipe="two_step"), tmp_path)
