"""RecSysLLM's masked pretraining stage: its corpus leaves every held-out event out, it trains
through recpipe's one training loop, and TALLRec and P5 fine-tune from what it saves."""

import contextlib
import json

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_model, params_dict, source
from recpipe import RecpipeError
from recpipe.cli import STEPS
from recpipe.model.load import load
from recpipe.model.train import add_lora
from recpipe.params import schema as params
from recpipe.recsysllm import infill
from recpipe.recsysllm.pretrain import (
    INTRA,
    Pretrained,
    infill_loss,
    infill_task,
    intra_module,
    load_pretrained,
)
from recpipe.steps import paths, scoring
from recpipe.steps import pretrained as fine_tuning_start
from test_text_instructions_sample import built  # noqa: F401  (module fixture: the data stages' outputs)

TINY_RUN = {
    "datasets": ["ml-100k"],
    "valid_size": 4,
    "sampling": {"length": 8},
    "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    "train": {"epochs": 1, "batch_size": 4, "lr": 1e-2, "dtype": "float32", "max_length": 256, "save_steps": 4},
}


@pytest.fixture(scope="module")
def tiny(built, tmp_path_factory):  # noqa: F811
    root, samples = built
    users, items = pl.read_parquet(root / "text" / "users.parquet"), pl.read_parquet(root / "text" / "items.parquet")
    texts = (
        users["text"].to_list()
        + items["name"].to_list()
        + ["Watched, oldest first: "]
        + (samples["prompt"] + samples["answer"]).to_list()
    )
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), texts)


def tiny_params(archives, tiny, **recsysllm) -> params.Params:
    data = params_dict([source("atomic", archives["atomic"])], recsysllm={**TINY_RUN, **recsysllm})
    data["model"] = {"name": str(tiny)}
    data["train"] = {"epochs": 1, "batch_size": 4, "lr": 1e-2, "dtype": "float32"}
    return params.parse(data)


def workdir(root, folder):
    """The pipeline's standard layout (data/tables/<d>, data/text/<d>, data/instructions) over the
    data stages' outputs in `root`."""
    for link, target in (
        ("data/tables/ml-100k", "tables"),
        ("data/text/ml-100k", "text"),
        ("data/instructions", "instructions"),
        ("data/sample", "sample"),
    ):
        (folder / link).parent.mkdir(parents=True, exist_ok=True)
        (folder / link).symlink_to(root / target)
    return folder


@pytest.fixture(scope="module")
def pretrained(built, tiny, archives, tmp_path_factory):  # noqa: F811
    """The pretrain stage run once, end to end, in a scratch working directory."""
    folder = workdir(built[0], tmp_path_factory.mktemp("work"))
    p = tiny_params(archives, tiny)
    with contextlib.chdir(folder):
        STEPS["pretrain"].run(p, "ml-100k")
        held = STEPS["pretrain"].held_out(p, "ml-100k")
    return folder, p, held


def test_the_stage_writes_corpus_adapter_and_metrics(pretrained):
    folder, _, _ = pretrained
    out = folder / "data/recsysllm/ml-100k"
    assert {f.name for f in (out / "pretrained").iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
    }
    metrics = json.loads((folder / "reports/recsysllm/ml-100k/pretrain.json").read_text())
    assert (
        set(metrics) == {"train_loss", "valid_loss", "best_step", "steps"}
        and metrics["train_loss"] > 0
        and metrics["valid_loss"] > 0
    )
    assert (folder / "dvclive/recsysllm/ml-100k/plots/metrics/train/loss.tsv").is_file()
    corpus = pl.read_parquet(out / "corpus.parquet")
    assert corpus.group_by("split").len().sort("split").rows() == [("train", corpus.height - 4), ("valid", 4)]
    # The adapter holds only the LoRA weights, the five new token rows and the intra embedding.
    saved = load_file(out / "pretrained" / "adapter_model.safetensors")
    assert not [k for k in saved if "base_layer" in k], "the whole embedding matrix was saved"
    deltas = [v for k, v in saved.items() if "trainable_tokens_delta" in k]
    assert deltas and all(v.shape[0] == 5 and v.abs().sum() > 0 for v in deltas)
    assert saved[f"base_model.model.{INTRA}.embedding.weight"].abs().sum() > 0  # trained from zero


def test_no_held_out_event_enters_any_pretraining_text(pretrained, built):  # noqa: F811
    folder, _, held = pretrained
    root, _ = built
    samples = pl.read_parquet(root / "instructions" / "samples.parquet")
    tallrec = samples.filter(pl.col("split") != "train").select("user_id", "item_id")
    interactions = pl.read_parquet(root / "tables" / "interactions.parquet")
    last = (
        interactions.sort("timestamp", "row").group_by("user_id").agg(pl.col("item_id").last())
    )  # P5's leave-one-out test items
    assert tallrec.join(held, on=["user_id", "item_id"], how="anti").is_empty()
    assert last.join(held, on=["user_id", "item_id"], how="anti").is_empty()
    names = dict(pl.read_parquet(root / "text" / "items.parquet").select("item_id", "name").iter_rows())
    held_names = {}
    for user, item in held.iter_rows():
        held_names.setdefault(user, set()).add(names[item])
    corpus = pl.read_parquet(folder / "data/recsysllm/ml-100k/corpus.parquet")
    seen = 0
    for user, text, spans in corpus.select("user_id", "text", "spans").iter_rows():
        in_text = {text[s["start"] : s["end"]] for s in spans if s["entity"] == "item"}
        assert not in_text & held_names.get(user, set()), f"user {user}: a held-out item is in their pretraining text"
        seen += len(in_text)
    assert seen > corpus.height  # the texts do name items


def test_same_params_give_the_same_corpus_and_adapter_bytes(pretrained, archives, tiny, built, tmp_path):  # noqa: F811
    folder, p, _ = pretrained
    again = workdir(built[0], tmp_path)
    with contextlib.chdir(again):
        STEPS["pretrain"].run(p, "ml-100k")
    for rel in ("corpus.parquet", "pretrained/adapter_model.safetensors", "pretrained/adapter_config.json"):
        assert (again / "data/recsysllm/ml-100k" / rel).read_bytes() == (
            folder / "data/recsysllm/ml-100k" / rel
        ).read_bytes(), rel


def test_loading_gives_back_the_saved_weights(pretrained, tiny):
    """The loaded adapter's token rows, intra embedding and LoRA weights are the saved ones, and
    merging them into plain weights changes no output."""
    from peft import get_peft_model_state_dict

    folder, _, _ = pretrained
    out = folder / "data/recsysllm/ml-100k/pretrained"
    saved = load_file(out / "adapter_model.safetensors")
    model, tok = load(str(tiny))
    peft_model = load_pretrained(model, tok, out, merge=False)
    loaded = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    ids = infill.special_token_ids(tok)
    x = torch.tensor(
        [tok("A 25-year-old man. Watched, oldest first: ").input_ids + [ids["[MASK]"], ids["[START]"], ids["[END]"]]]
    )
    with torch.no_grad():
        before = peft_model(input_ids=x).logits
        merged = peft_model.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=x).logits, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged.intra.embedding.weight, saved[f"base_model.model.{INTRA}.embedding.weight"])
    rows = next(
        v for k, v in saved.items() if "embed_tokens" in k and "delta" in k
    )  # peft's "delta": the rows' trained values
    torch.testing.assert_close(merged.get_input_embeddings().weight[sorted(ids.values())], rows)


def test_a_pretraining_step_lowers_the_loss_on_a_fixed_batch(pretrained, tiny):
    folder, p, _ = pretrained
    corpus = pl.read_parquet(folder / "data/recsysllm/ml-100k/corpus.parquet").head(12)
    model, tok = load(str(tiny))
    task = infill_task(corpus, p.recsysllm, seed=0)(model, tok)
    model = add_lora(model, p.recsysllm.lora, **task.lora_extras)
    batch = task.collate(task.rows[:8])
    trainable = {n: w.detach().clone() for n, w in model.named_parameters() if w.requires_grad}
    assert any("trainable_tokens_delta" in n for n in trainable) and any(INTRA in n for n in trainable)
    opt = torch.optim.AdamW([w for w in model.parameters() if w.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss, n, _ = infill_loss(model, batch)
        (loss / n).backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item() / int(n))
    assert losses[-1] < losses[0], losses
    moved = {n for n, w in model.named_parameters() if n in trainable and not torch.equal(w, trainable[n])}
    assert (
        any("trainable_tokens_delta" in n for n in moved)
        and any(INTRA in n for n in moved)
        and any("lora_B" in n for n in moved)
    )
    # The loss over part B only equals a full forward's cross-entropy over the same labels.
    with torch.no_grad():
        ours, n, _ = infill_loss(model, batch)
        full = infill.infill_forward(model, batch, intra_module(model)).logits
        plain = torch.nn.functional.cross_entropy(
            full[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=infill.IGNORE, reduction="sum"
        )
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-4)


def test_without_2d_positions_plain_positions_and_no_intra_module(pretrained, archives, tiny):
    folder, _, _ = pretrained
    p = tiny_params(archives, tiny, positions_2d=False)
    corpus = pl.read_parquet(folder / "data/recsysllm/ml-100k/corpus.parquet").head(4)
    model, tok = load(str(tiny))
    task = infill_task(corpus, p.recsysllm, seed=0)(model, tok)
    assert not hasattr(model, INTRA) and "modules_to_save" not in task.lora_extras
    assert all(r["position_ids"] == list(range(len(r["input_ids"]))) and set(r["intra_ids"]) == {0} for r in task.rows)
    assert all(r["part_a"] < len(r["input_ids"]) for r in task.rows)


def test_fine_tuning_starts_from_the_pretrained_model(pretrained, archives, tiny, tmp_path):
    """train.init pretrained: TALLRec trains a fresh adapter on the pretrained model, and
    evaluation loads the same start under it."""
    folder, _, _ = pretrained
    data = params_dict([source("atomic", archives["atomic"])], recsysllm=TINY_RUN)
    data["model"] = {"name": str(tiny)}
    data["train"] = {"epochs": 1, "batch_size": 4, "lr": 1e-2, "dtype": "float32", "init": "pretrained"}
    data["evaluate"] = {"batch_size": 8, "dtype": "float32"}
    p = params.parse(data)
    with contextlib.chdir(folder):
        STEPS["train"].run(p)
        model, _ = scoring.scoring_model(p, paths.ADAPTER, fine_tuning_start.start(p.train.init, p.dataset))
        STEPS["evaluate"].run(p)
    assert json.loads((folder / "reports/tuned.json").read_text())["auc"] >= 0
    assert not [
        k for k in load_file(folder / paths.ADAPTER / "adapter_model.safetensors") if "embed" in k or "lm_head" in k
    ]  # LoRA weights only
    start = Pretrained(folder / "data/recsysllm/ml-100k/pretrained")
    base, tok2 = load(str(tiny))
    pretrained_model = start(base, tok2)
    ids = sorted(infill.special_token_ids(tok2).values())
    # The fine-tuned adapter sits on the pretrained rows: the new token rows are the pretrained ones.
    torch.testing.assert_close(
        model.get_input_embeddings().weight[ids], pretrained_model.get_input_embeddings().weight[ids]
    )
    assert not torch.equal(
        pretrained_model.get_input_embeddings().weight[ids],
        load(str(tiny))[0].get_input_embeddings().weight[: ids[0]].mean(0).expand(len(ids), -1),
    )


def test_bad_input_is_one_line(archives, tiny, tmp_path):
    base = params_dict([source("atomic", archives["atomic"])])
    cases = [
        ({"recsysllm": {"order": "backwards"}}, r"recsysllm.order: Input should be 'chronological' or 'random'"),
        (
            {"recsysllm": {"objectives": {"entity": 0, "sentence": 0}}},
            r"recsysllm.objectives must be >= 0 with at least one above 0",
        ),
        ({"recsysllm": {"objectives": {"words": 1}}}, r"recsysllm.objectives.words"),
        ({"recsysllm": {"document": [0.5, 1.5]}}, r"recsysllm.document must be a range \[low, high\] within \(0, 1\]"),
        (
            {"recsysllm": {"sampling": {"shares": [0.5, 0.5, 0.5]}}},
            r"recsysllm.sampling.shares must be three numbers >= 0 summing to 1",
        ),
        (
            {"recsysllm": {"sampling": {"mode": "latest"}}},
            r"recsysllm.sampling.mode: Input should be 'temporal', 'uniform' or 'recent'",
        ),
        ({"recsysllm": {"datasets": ["nope"]}}, r"dataset 'nope' has no entry"),
        (
            {"train": {"init": "pretrained"}},
            r"train.init pretrained: dataset 'ml-100k' has no pretraining \(add it to recsysllm.datasets \[\]\)",
        ),
        ({"recsysllm": {"train": {"init": "pretrained"}}}, r"recsysllm.train.init must be base"),
    ]
    for change, message in cases:
        with pytest.raises(RecpipeError, match=message) as e:
            params.parse({**base, **change})
        assert "\n" not in str(e.value)
    with pytest.raises(RecpipeError, match=r"no pretrained adapter \(run the pretrain stage first"):
        Pretrained(tmp_path / "missing")


def test_a_tied_output_layer_shares_the_trained_rows(tiny, tmp_path):
    """SmolLM2 ties its output layer to the input embeddings: one set of token rows is trained,
    saved and loaded, and the output layer reads the same rows."""
    from peft import get_peft_model_state_dict
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tied")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(tmp_path / "tied")
    model, tok = load(str(tmp_path / "tied"))
    r = tiny_params_section(positions_2d=True)
    task = infill_task(
        pl.DataFrame(
            {
                "user_id": [1],
                "text": ["A 24-year-old man. Watched: Heat (1995)."],
                "spans": [[{"entity": "item", "start": 28, "end": 39}]],
                "split": ["train"],
            }
        ),
        r,
        0,
    )(model, tok)
    assert list(task.lora_extras["trainable_token_indices"]) == ["embed_tokens"]
    peft_model = add_lora(model, r.lora, **task.lora_extras)
    for w in peft_model.parameters():
        if w.requires_grad:
            torch.nn.init.normal_(w, std=0.1)  # as if trained
    peft_model.save_pretrained(tmp_path / "adapter")
    base, tok2 = load(str(tmp_path / "tied"))
    loaded = load_pretrained(base, tok2, tmp_path / "adapter", merge=False)
    saved = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    again = get_peft_model_state_dict(loaded, save_embedding_layers=False)
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)
    merged = loaded.merge_and_unload()
    ids = sorted(infill.special_token_ids(tok2).values())
    torch.testing.assert_close(merged.get_output_embeddings().weight[ids], merged.get_input_embeddings().weight[ids])
    torch.testing.assert_close(
        merged.get_input_embeddings().weight[ids], next(v for k, v in saved.items() if "delta" in k)
    )


def tiny_params_section(**recsysllm):
    from recpipe.params.recsysllm import RecsysllmParams

    return RecsysllmParams.model_validate({**TINY_RUN, **recsysllm})


def test_eval_steps_keep_the_best_step_by_validation_loss(built, tiny, archives, tmp_path):  # noqa: F811
    """recsysllm.train.eval_steps: the task's own validation loss picks the adapter kept."""
    folder = workdir(built[0], tmp_path)
    p = tiny_params(archives, tiny, train={**TINY_RUN["train"], "eval_steps": 2, "save_steps": 2})
    with contextlib.chdir(folder):
        STEPS["pretrain"].run(p, "ml-100k")
    metrics = json.loads((folder / "reports/recsysllm/ml-100k/pretrain.json").read_text())
    assert metrics["steps"] > 2
    assert metrics["best_step"] % 2 == 0 or metrics["best_step"] == metrics["steps"]  # an evaluated step
    assert metrics["valid_loss"] > 0
    assert (folder / "data/recsysllm/ml-100k/pretrained/adapter_model.safetensors").is_file()


def test_dynamic_positions_reach_fine_tuning_and_scoring(pretrained, archives, tiny):
    """train.init pretrained with 2D positions: recsysllm.dynamic_positions on trains and scores
    with the pretrained intra embedding (other adapter, other scores than off); off leaves it
    unused, so the pretrained model fine-tunes and scores as a plain one."""
    folder, _, _ = pretrained
    data = params_dict([source("atomic", archives["atomic"])], recsysllm=TINY_RUN)
    data["model"] = {"name": str(tiny)}
    data["train"] = {"epochs": 1, "batch_size": 4, "lr": 1e-2, "dtype": "float32", "init": "pretrained"}
    data["evaluate"] = {"batch_size": 8, "dtype": "float32"}
    results = {}
    for dynamic in (True, False):
        p = params.parse({**data, "recsysllm": {**TINY_RUN, "dynamic_positions": dynamic}})
        with contextlib.chdir(folder):
            positions = fine_tuning_start.intra_positions(p, p.train.init, p.dataset)
            assert (positions is not None) == dynamic
            STEPS["train"].run(p)
            STEPS["evaluate"].run(p)
        adapter = load_file(folder / paths.ADAPTER / "adapter_model.safetensors")
        scores = pl.read_parquet(folder / paths.EVAL / "tuned" / "predictions.parquet")["p_yes"].to_list()
        results[dynamic] = adapter, scores
    (on, on_scores), (off, off_scores) = results[True], results[False]
    assert on.keys() == off.keys() and any(not torch.equal(on[k], off[k]) for k in on)
    assert on_scores != off_scores
    model, tok = load(str(tiny))
    with contextlib.chdir(folder):
        start = fine_tuning_start.start("pretrained", "ml-100k")(model, tok)
        on = params.parse({**data, "recsysllm": {**TINY_RUN, "dynamic_positions": True}})
        positions = fine_tuning_start.intra_positions(on, "pretrained", "ml-100k")(start, tok)
        prompts = pl.read_parquet("data/sample/train.parquet")["prompt"].to_list()
    assert (
        positions.embedding is intra_module(start) and positions.embedding.embedding.weight.abs().sum() > 0
    )  # trained, merged
    assert max(max(positions.run(tok(t).input_ids)[0]) for t in prompts) >= 2  # the prompts' entities get intra ids
