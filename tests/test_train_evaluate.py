import json
import shutil

import pytest
import torch

from conftest import make_tiny_model
from recpipe import RecpipeError
from recpipe.metrics import auc_metrics
from recpipe.model.decoding import shared_prefix_length
from recpipe.model.load import answer_token_ids, load, resolve
from recpipe.model.train import IGNORE, PadCollator, answer_loss_trainer, encode, train
from recpipe.params.model import ModelParams
from recpipe.params.train import LoraParams, TrainParams
from recpipe.tallrec.evaluate import score, valid_auc
from test_text_instructions_sample import built  # noqa: F401  (module fixture: the data stages' outputs)


@pytest.fixture(scope="module")
def tiny(built, tmp_path_factory):  # noqa: F811
    root, samples = built
    texts = (samples["prompt"] + samples["answer"]).to_list()
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), texts)


def test_labels_cover_only_the_answer(tiny):
    _, tok = load(str(tiny))
    rows = encode(["### Response:\n"], ["Yes."], tok, max_length=64)
    answer = tok("Yes.", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert rows[0]["labels"][-len(answer) :] == answer
    assert set(rows[0]["labels"][: -len(answer)]) == {IGNORE}
    long = encode(["word " * 500 + "### Response:\n"], ["No."], tok, max_length=32)[0]
    assert len(long["input_ids"]) == 32 and long["labels"][-2] != IGNORE  # the start was cut, not the answer
    batch = PadCollator(tok.pad_token_id)([rows[0], long])
    assert batch["input_ids"].shape == (2, 32) and batch["attention_mask"][0].sum() == len(rows[0]["input_ids"])


def test_history_spans_label_their_tokens_too(tiny):
    _, tok = load(str(tiny))
    prompt = "Seen: Heat (1995), Dr. No (1962). Next one: "
    spans = [[6, 17, 2], [19, 32, 4]]  # the two names, [start, end, item]
    assert [prompt[a:b] for a, b, _ in spans] == ["Heat (1995)", "Dr. No (1962)"]
    row = encode([prompt], ["Casino (1995)"], tok, 256, [spans])[0]
    answer = tok("Casino (1995)", add_special_tokens=False).input_ids + [tok.eos_token_id]
    labeled = [
        t for t, label in zip(row["input_ids"][: -len(answer)], row["labels"][: -len(answer)]) if label != IGNORE
    ]
    text = tok.decode(labeled)
    assert "Heat (1995)" in text and "Dr. No (1962)" in text and "Seen" not in text and "Next" not in text
    assert row["labels"][-len(answer) :] == answer
    plain = encode([prompt], ["Casino (1995)"], tok, 256)[0]
    assert plain["input_ids"] == row["input_ids"] and set(plain["labels"][: -len(answer)]) == {IGNORE}
    assert encode([prompt], ["Casino (1995)"], tok, 256, [[]])[0] == plain  # no spans: the answer only


def test_left_padded_batches_score_like_one_at_a_time(tiny, built):  # noqa: F811
    model, tok = load(str(tiny))
    yes, no = answer_token_ids(tok, "Yes.", "No.")
    prompts = built[1]["prompt"].head(7).to_list()
    batched = score(model, tok, prompts, yes, no, batch_size=4)
    single = [score(model, tok, [p], yes, no, batch_size=1)[0] for p in prompts]
    assert torch.allclose(torch.tensor(batched), torch.tensor(single), atol=1e-5)
    assert len(set(round(p, 6) for p in batched)) > 1


def test_train_then_adapter_and_metrics(tiny, built, tmp_path, monkeypatch):  # noqa: F811
    root, _ = built
    # A model whose params name is not the folder it loads from (as a GGUF file's cache folder).
    monkeypatch.setattr("recpipe.model.load.load", lambda name, *args, **kwargs: load(str(tiny), *args, **kwargs))
    metrics = train(
        root / "sample" / "train.parquet",
        root / "sample" / "valid.parquet",
        tmp_path / "adapter",
        tmp_path / "train.json",
        ModelParams(name="org/tiny-model"),
        LoraParams(rank=4, alpha=8),
        TrainParams(epochs=2, batch_size=4, lr=1e-2, dtype="float32"),
        seed=0,
        live_dir=tmp_path / "live",
        checkpoints=tmp_path / "ckpt",
        validate=valid_auc("tallrec", 16),
        run_path=tmp_path / "run.json",
    )
    # The adapter names its base model as params do, so its bytes do not depend on the machine.
    assert (
        json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "org/tiny-model"
    )
    assert not (tmp_path / "adapter" / "README.md").exists()
    # The metrics file holds what `dvc metrics diff` should compare; timings and dtype go apart.
    assert json.loads((tmp_path / "train.json").read_text()) == metrics and set(metrics) == {
        "train_loss",
        "valid_auc",
        "best_step",
        "steps",
    }
    assert metrics["best_step"] == metrics["steps"] == 8  # no eval_steps: the last step's adapter, scored once
    assert set(json.loads((tmp_path / "run.json").read_text())) == {"train_seconds", "train_tokens_per_second", "dtype"}
    assert 0 <= metrics["valid_auc"] <= 1 and metrics["train_loss"] > 0
    assert (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").is_file()
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_metrics():
    m = auc_metrics([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.6])
    assert m["auc"] == 0.75 and m["accuracy"] == 0.5 and m["predicted_positive_rate"] == 0.5


def test_model_path_that_does_not_exist(tmp_path):
    with pytest.raises(RecpipeError, match="no such model folder"):
        resolve(str(tmp_path / "nope"))
    with pytest.raises(RecpipeError, match="no such file"):
        resolve(str(tmp_path / "nope.gguf"))
    # Hub ids: tests/test_model_load.py


def test_shared_prefix_scores_like_a_plain_forward_pass(tiny, built):  # noqa: F811
    model, tok = load(str(tiny))
    yes, no = answer_token_ids(tok, "Yes.", "No.")
    prompts = built[1]["prompt"].head(6).to_list()
    with torch.no_grad():
        plain = [
            torch.softmax(model(input_ids=torch.tensor([tok(p).input_ids])).logits[0, -1, [yes, no]], -1)[0].item()
            for p in prompts
        ]
    assert torch.allclose(
        torch.tensor(score(model, tok, prompts, yes, no, batch_size=4)), torch.tensor(plain), atol=1e-5
    )
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2 and shared_prefix_length([[7], [8]]) == 0


def test_answer_only_loss_equals_the_models_own_loss(tiny):
    from recpipe.model.train import answer_loss, mean_batch_loss

    model, tok = load(str(tiny))
    rows = encode(
        ["### Response:\n", "a much longer prompt " * 5 + "### Response:\n"], ["Yes.", "No."], tok, max_length=128
    )
    batch = PadCollator(tok.pad_token_id)(rows)
    full = model(**batch).loss
    ours = mean_batch_loss(answer_loss, model, dict(batch))[0]
    assert torch.allclose(ours, full, rtol=1e-5)


def test_shared_instruction_gives_the_plain_loss_and_gradients(tiny):
    """The loss computes the instruction every row starts with once per batch: its loss and its
    LoRA gradients must match the model's own full pass (LoRA B is random so every path counts)."""
    from recpipe.model.train import add_lora, answer_loss, mean_batch_loss

    model, tok = load(str(tiny))
    model = add_lora(model, LoraParams(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    instruction = "Decide whether the user will like the movie. Answer Yes. or No.\n"
    prompts = [
        instruction + "liked: a, b\n### Response:\n",
        instruction + "liked: a much longer history, c, d, e\n### Response:\n",
        instruction + "x\n### Response:\n",
    ]
    batch = PadCollator(tok.pad_token_id)(encode(prompts, ["Yes.", "No.", "No."], tok, max_length=128))
    assert shared_prefix_length(batch["input_ids"], 1000) >= len(tok(instruction).input_ids) - 1

    def loss_and_grads(fn):
        model.zero_grad()
        loss = fn()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, plain_grads = loss_and_grads(lambda: model(**batch).loss)
    ours, our_grads = loss_and_grads(lambda: mean_batch_loss(answer_loss, model, dict(batch))[0])
    assert torch.allclose(ours, plain, rtol=1e-5)
    for name, grad in plain_grads.items():
        assert torch.allclose(our_grads[name], grad, atol=1e-6, rtol=1e-4), name
    assert shared_prefix_length(torch.tensor([[1, 2, 3], [1, 2, 4]]), 5) == 2
    assert shared_prefix_length(torch.tensor([[1, 2, 3], [1, 2, 3]]), 1) == 1


def test_lora_start_does_not_depend_on_how_the_model_was_loaded(tiny, built, tmp_path, monkeypatch):  # noqa: F811
    """A first load of a GGUF model builds the dequantized model, which draws random numbers; the
    run must still match one that found the model cached (seeded after loading)."""
    from safetensors.torch import load_file

    import recpipe.model.load

    root, _ = built
    real_load = recpipe.model.load.load

    def run(name, load):
        monkeypatch.setattr(recpipe.model.load, "load", load)
        train(
            root / "sample" / "train.parquet",
            root / "sample" / "valid.parquet",
            tmp_path / name,
            tmp_path / f"{name}.json",
            ModelParams(name=str(tiny)),
            LoraParams(rank=4, alpha=8),
            TrainParams(epochs=1, batch_size=4, lr=1e-2, dtype="float32"),
            seed=0,
            live_dir=tmp_path / f"live-{name}",
            checkpoints=tmp_path / "ckpt",
        )
        return load_file(tmp_path / name / "adapter_model.safetensors")

    def load_drawing_random_numbers(*args, **kwargs):
        torch.rand(1000)  # what building a model from its config does
        return real_load(*args, **kwargs)

    cached, first = run("cached", real_load), run("first", load_drawing_random_numbers)
    assert cached.keys() == first.keys() and all(torch.equal(cached[k], first[k]) for k in cached)


def test_stopped_run_resumes_from_its_last_checkpoint(tiny, built, tmp_path, monkeypatch, caplog):  # noqa: F811
    """save_steps: a run killed after step 3 continues from checkpoint-2 and ends with the adapter
    an unbroken run gives."""
    from safetensors.torch import load_file

    import recpipe.model.train

    root, _ = built
    real_trainer = recpipe.model.train.answer_loss_trainer

    def run(name):
        train(
            root / "sample" / "train.parquet",
            root / "sample" / "valid.parquet",
            tmp_path / name,
            tmp_path / f"{name}.json",
            ModelParams(name=str(tiny)),
            LoraParams(rank=4, alpha=8, dropout=0.0),
            TrainParams(epochs=1, batch_size=4, lr=1e-2, dtype="float32", save_steps=2),
            seed=0,
            live_dir=tmp_path / f"live-{name}",
            checkpoints=tmp_path / f"ckpt-{name}",
        )
        return load_file(tmp_path / name / "adapter_model.safetensors"), json.loads(
            (tmp_path / f"{name}.json").read_text()
        )

    def stopping_trainer():
        class Stopping(real_trainer()):
            def training_step(self, *args, **kwargs):
                if self.state.global_step == 3:
                    raise KeyboardInterrupt  # the session ends mid-run
                return super().training_step(*args, **kwargs)

        return Stopping

    unbroken, unbroken_metrics = run("unbroken")
    monkeypatch.setattr(recpipe.model.train, "answer_loss_trainer", stopping_trainer)
    with pytest.raises(KeyboardInterrupt):
        run("resumed")
    saved = list((tmp_path / "ckpt-resumed").glob("*/checkpoint-*"))
    assert [p.name for p in saved] == ["checkpoint-2"]
    # A stop in the middle of the next save: checkpoint-4 has its adapter but no trainer state yet.
    partial = saved[0].with_name("checkpoint-4")
    partial.mkdir()
    shutil.copy(saved[0] / "adapter_model.safetensors", partial)
    monkeypatch.setattr(recpipe.model.train, "answer_loss_trainer", real_trainer)
    with caplog.at_level("INFO", logger="recpipe"):
        resumed, resumed_metrics = run("resumed")
    assert "checkpoint-4 was not written to the end" in caplog.text
    assert "resuming from" in caplog.text and "checkpoint-2, step 2" in caplog.text
    assert all(torch.allclose(unbroken[k], resumed[k], atol=1e-5) for k in unbroken)
    # The loss reported is over every step, the two before the stop included.
    assert resumed_metrics["steps"] == unbroken_metrics["steps"] > 2
    assert resumed_metrics["train_loss"] == pytest.approx(unbroken_metrics["train_loss"], abs=1e-4)


REPEAT = """
import json, sys
import polars as pl
from recpipe.model.load import load
from recpipe.model.train import train
from recpipe.params.model import ModelParams
from recpipe.params.train import LoraParams, TrainParams
from recpipe.tallrec.evaluate import score_frame
root, model, out = sys.argv[1:4]
train(
    f"{root}/sample/train.parquet", f"{root}/sample/valid.parquet", f"{out}/adapter", f"{out}/train.json",
    ModelParams(name=model), LoraParams(rank=4, alpha=8, target_modules=("q_proj", "v_proj", "k_proj")),
    TrainParams(epochs=1, batch_size=4, lr=1e-2, dtype="float32"), seed=0, live_dir=f"{out}/live", checkpoints=f"{out}/ckpt",
)
from peft import PeftModel
base, tok = load(model)
tuned = PeftModel.from_pretrained(base, f"{out}/adapter").merge_and_unload()
test = pl.read_parquet(f"{root}/instructions/samples.parquet").filter(pl.col("split") == "test").head(24)
print(json.dumps(score_frame(tuned, tok, test, 8, "tallrec")))
"""


def test_same_params_give_the_same_adapter_bytes_and_scores(tiny, built, tmp_path):  # noqa: F811
    """Two runs in processes with different string hashing (PYTHONHASHSEED): the adapter folder is
    byte for byte the same (DVC sees the same hash) and so are the test scores."""
    import os
    import subprocess
    import sys

    root, _ = built
    runs = []
    for hashseed in ("1", "2"):
        out = tmp_path / hashseed
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        run = subprocess.run(
            [sys.executable, "-c", REPEAT, str(root), str(tiny), str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        files = {f.name: f.read_bytes() for f in sorted((out / "adapter").iterdir())}
        runs.append((files, json.loads(run.stdout.strip().splitlines()[-1])))
    (files_a, scores_a), (files_b, scores_b) = runs
    assert files_a.keys() == files_b.keys() and "adapter_config.json" in files_a
    assert all(files_a[name] == files_b[name] for name in files_a), [n for n in files_a if files_a[n] != files_b[n]]
    assert scores_a == scores_b


def test_roc_has_a_point_per_distinct_score(tmp_path, monkeypatch):
    import polars as pl

    import recpipe.tallrec.evaluate as ev

    scores = [0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]  # 7 distinct, collinear stretches included
    labels = [1, 1, 0, 1, 1, 0, 0, 0]
    samples = pl.DataFrame(
        {
            "sample_id": [str(i) for i in range(8)],
            "user_id": range(8),
            "item_id": range(8),
            "label": labels,
            "split": ["test"] * 8,
            "prompt": ["p"] * 8,
        }
    )
    samples.write_parquet(tmp_path / "samples.parquet")
    monkeypatch.setattr(ev, "score_frame", lambda *a, **k: scores)
    ev.evaluate(
        tmp_path / "samples.parquet",
        tmp_path / "eval",
        tmp_path / "m.json",
        tmp_path / "roc.csv",
        None,
        None,
        4,
        "tallrec",
    )
    roc = pl.read_csv(tmp_path / "roc.csv")
    assert roc.height == len(set(scores)) + 1  # sklearn's (0, 0) start, then one point per threshold


class ScriptedScores:
    """A validator whose score is set per optimizer step, recording the LoRA weights it saw."""

    def __init__(self, by_step: dict[int, float]):
        self.by_step, self.step, self.weights = by_step, None, {}

    def __call__(self, model, tokenizer, valid):
        self.weights[self.step] = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
        return {"valid_auc": self.by_step[self.step]}


def scripted_trainer(scores: ScriptedScores, stop_at: int | None = None):
    """The trainer, telling `scores` the step it evaluates; stop_at: the session ends before that step + 1."""
    real = answer_loss_trainer()  # imported with the module: the real one, whatever a test patched in

    class Scripted(real):
        def evaluate(self, *args, **kwargs):
            scores.step = self.state.global_step
            return super().evaluate(*args, **kwargs)

        def training_step(self, *args, **kwargs):
            if self.state.global_step == stop_at:
                raise KeyboardInterrupt
            return super().training_step(*args, **kwargs)

    return lambda: Scripted


# Best at step 2, then three evaluations without a better score; the 0.9 at step 6 is never reached
# with patience 3, and would be reached by a run that forgot its patience count or best score.
SCRIPT = {1: 0.5, 2: 0.8, 3: 0.6, 4: 0.7, 5: 0.6, 6: 0.9, **{s: 0.1 for s in range(7, 13)}}


def run_scripted(tiny, root, tmp_path, name, scores, monkeypatch, stop_at=None):
    from safetensors.torch import load_file

    import recpipe.model.train
    from recpipe.model.train import Validator

    monkeypatch.setattr(recpipe.model.train, "answer_loss_trainer", scripted_trainer(scores, stop_at))
    metrics = train(
        root / "sample" / "train.parquet",
        root / "sample" / "valid.parquet",
        tmp_path / name,
        tmp_path / f"{name}.json",
        ModelParams(name=str(tiny)),
        LoraParams(rank=4, alpha=8, dropout=0.0),
        TrainParams(epochs=3, batch_size=4, lr=1e-2, dtype="float32", eval_steps=1, patience=3),
        seed=0,
        live_dir=tmp_path / f"live-{name}",
        checkpoints=tmp_path / f"ckpt-{name}",
        validate=Validator(scores, "valid_auc"),
    )
    return metrics, load_file(tmp_path / name / "adapter_model.safetensors")


def test_eval_steps_keep_the_best_step_and_stop_early(tiny, built, tmp_path, monkeypatch):  # noqa: F811
    root, _ = built
    scores = ScriptedScores(SCRIPT)
    metrics, adapter = run_scripted(tiny, root, tmp_path, "run", scores, monkeypatch)
    assert sorted(scores.weights) == [1, 2, 3, 4, 5]  # 12 steps allowed; patience ends it after step 5
    assert metrics == json.loads((tmp_path / "run.json").read_text())
    assert (metrics["best_step"], metrics["valid_auc"], metrics["steps"]) == (2, 0.8, 5)
    # The saved adapter is step 2's weights, not the last step's.
    best, last = scores.weights[2], scores.weights[5]
    assert all(torch.equal(adapter[k], best[f"{k[: -len('.weight')]}.default.weight"]) for k in adapter)
    assert not all(torch.equal(adapter[k], last[f"{k[: -len('.weight')]}.default.weight"]) for k in adapter)
    # dvclive has every evaluation's score.
    logged = (tmp_path / "live-run" / "plots" / "metrics" / "eval" / "valid_auc.tsv").read_text().splitlines()
    assert [line.split("\t")[-1] for line in logged[1:]] == ["0.5", "0.8", "0.6", "0.7", "0.6"]


def test_resumed_run_keeps_its_best_step_and_patience(tiny, built, tmp_path, monkeypatch):  # noqa: F811
    """Stopped after step 4 (best step 2, two evaluations without a better score since), the
    resumed run evaluates step 5, stops there and saves step 2's adapter, as the unbroken run does."""
    root, _ = built
    unbroken_metrics, unbroken = run_scripted(tiny, root, tmp_path, "unbroken", ScriptedScores(SCRIPT), monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_scripted(tiny, root, tmp_path, "resumed", ScriptedScores(SCRIPT), monkeypatch, stop_at=4)
    resumed_scores = ScriptedScores(SCRIPT)
    metrics, resumed = run_scripted(tiny, root, tmp_path, "resumed", resumed_scores, monkeypatch)
    assert sorted(resumed_scores.weights) == [5]
    assert {k: v for k, v in metrics.items() if k != "train_loss"} == {
        k: v for k, v in unbroken_metrics.items() if k != "train_loss"
    }
    assert all(torch.allclose(unbroken[k], resumed[k], atol=1e-5) for k in unbroken)
