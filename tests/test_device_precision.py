"""model.device, the dtypes (float16 among them) and gradient checkpointing. No GPU here: the CUDA
paths are checked as far as the CPU can (device choice and its errors, weights in the chosen dtype,
the scoring model moved to the chosen device)."""

import pytest
import torch

import recpipe.model.load
from conftest import params_dict, source
from recpipe import RecpipeError
from recpipe.cli import STEPS
from recpipe.model.load import load, pick_device, pick_dtype
from recpipe.model.train import (
    PadCollator,
    add_lora,
    answer_loss,
    encode,
    mean_batch_loss,
    pin_device,
    train,
)
from recpipe.params import schema as params
from recpipe.params.model import ModelParams
from recpipe.params.train import LoraParams, TrainParams
from recpipe.steps import scoring
from test_text_instructions_sample import built  # noqa: F401
from test_train_evaluate import tiny  # noqa: F401  (module fixture: the tiny model)


@pytest.fixture
def two_gpus(monkeypatch):
    """torch as it is on a machine with two CUDA devices (only what pick_device asks)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def no_load(*args, **kwargs):
    raise AssertionError("the model must not be loaded")


def test_device_auto_is_the_cpu_here_and_cuda_without_cuda_fails():
    assert not torch.cuda.is_available()  # this test machine
    assert pick_device("auto") == pick_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(RecpipeError) as e:
            pick_device(name)
        assert str(e.value).startswith(f"model.device {name!r}: no CUDA device here") and "\n" not in str(e.value)
    with pytest.raises(RecpipeError, match="model.device 'cuda:x': expected auto, cpu, cuda or cuda:N"):
        pick_device("cuda:x")


def test_device_choice_on_a_machine_with_two_gpus(two_gpus):
    assert pick_device("auto") == pick_device("cuda") == torch.device("cuda", 0)
    assert pick_device("cuda:1") == torch.device("cuda", 1) and pick_device("cpu") == torch.device("cpu")
    with pytest.raises(
        RecpipeError, match=r"model.device 'cuda:2': this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"
    ):
        pick_device("cuda:2")


def test_auto_dtype_follows_the_chosen_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    monkeypatch.setattr(torch.cuda, "device", lambda d: __import__("contextlib").nullcontext())
    assert pick_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16  # bf16 in hardware
    assert pick_dtype("float16", torch.device("cpu")) == torch.float16 and pick_dtype("float32") == torch.float32
    assert pick_dtype("auto", torch.device("cpu")) in (torch.bfloat16, torch.float32)  # the CPU's flags


def test_params_take_float16_devices_and_gradient_checkpointing(archives):
    base = [source("atomic", archives["atomic"])]
    p = params.parse(
        params_dict(
            base,
            model={"device": "cuda:1"},
            train={"dtype": "float16", "gradient_checkpointing": True},
            evaluate={"dtype": "float16"},
        )
    )
    assert (
        p.model.device == "cuda:1" and p.train.dtype == p.evaluate.dtype == "float16" and p.train.gradient_checkpointing
    )
    assert ModelParams().device == "auto" and not TrainParams().gradient_checkpointing
    with pytest.raises(RecpipeError, match="model.device: String should match pattern"):
        params.parse(params_dict(base, model={"device": "gpu"}))


def test_train_fails_early_on_a_device_or_precision_this_machine_lacks(tiny, built, tmp_path, monkeypatch):  # noqa: F811
    root, _ = built
    monkeypatch.setattr(recpipe.model.load, "load", no_load)

    def run(model_p, train_p):
        train(
            root / "sample" / "train.parquet",
            root / "sample" / "valid.parquet",
            tmp_path / "a",
            tmp_path / "m.json",
            model_p,
            LoraParams(),
            train_p,
            seed=0,
            live_dir=tmp_path / "live",
            checkpoints=tmp_path / "ckpt",
        )

    with pytest.raises(RecpipeError, match=r"^model.device 'cuda': no CUDA device here"):
        run(ModelParams(name=str(tiny), device="cuda"), TrainParams())
    with pytest.raises(
        RecpipeError, match=r"^train.dtype float16: the Trainer trains in float16 on CUDA only, and model.device is cpu"
    ):
        run(ModelParams(name=str(tiny)), TrainParams(dtype="float16"))


def test_pinned_device_replaces_the_trainers_own_choice(monkeypatch):
    """One process on cuda:1: the Trainer's device becomes cuda:1, with no DataParallel over the others."""
    from transformers import TrainingArguments

    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to=[])
    pin_device(args, torch.device("cuda", 1))
    assert args.device == torch.device("cuda", 1) and args.n_gpu == 1 and current == [torch.device("cuda", 1)]


def scoring_params(archives, tiny, **evaluate):  # noqa: F811
    return params.parse(
        params_dict([source("atomic", archives["atomic"])], model={"name": str(tiny)}, evaluate=evaluate)
    )


def test_scoring_model_is_moved_to_the_chosen_device_in_the_chosen_dtype(archives, tiny, tmp_path, monkeypatch):  # noqa: F811
    # The meta device stands in for a GPU: a model not moved by the loading helper stays on the CPU.
    monkeypatch.setattr(recpipe.model.load, "pick_device", lambda name: torch.device("meta"))
    model, _ = scoring.scoring_model(scoring_params(archives, tiny, dtype="bfloat16"))
    assert {p.device.type for p in model.parameters()} == {"meta"} and {p.dtype for p in model.parameters()} == {
        torch.bfloat16
    }
    monkeypatch.undo()
    # With an adapter: merged into plain weights, on the CPU here, in float16.
    base, _ = load(str(tiny))
    add_lora(base, LoraParams(rank=4, alpha=8)).save_pretrained(tmp_path / "adapter")
    model, tok = scoring.scoring_model(scoring_params(archives, tiny, dtype="float16"), str(tmp_path / "adapter"))
    assert not any("lora" in n for n, _ in model.named_parameters()) and not model.training
    assert {p.device for p in model.parameters()} == {torch.device("cpu")} and {
        p.dtype for p in model.parameters()
    } == {torch.float16}
    from recpipe.model.load import answer_token_ids
    from recpipe.tallrec.evaluate import score

    assert all(
        0 < s < 1
        for s in score(
            model,
            tok,
            ["liked: a\n### Response:\n", "x\n### Response:\n"],
            *answer_token_ids(tok, "Yes.", "No."),
            batch_size=2,
        )
    )


def test_scoring_model_fails_before_loading_on_a_missing_device(archives, tiny, monkeypatch):  # noqa: F811
    monkeypatch.setattr(recpipe.model.load, "load", no_load)
    p = params.parse(params_dict([source("atomic", archives["atomic"])], model={"name": str(tiny), "device": "cuda:0"}))
    with pytest.raises(RecpipeError, match=r"^model.device 'cuda:0': no CUDA device here"):
        STEPS["evaluate_base"].run(p)


def test_weights_load_in_the_requested_dtype_and_lora_stays_float32(tiny):  # noqa: F811
    model, _ = load(str(tiny), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model = add_lora(model, LoraParams(rank=4, alpha=8))
    lora = {n: p.dtype for n, p in model.named_parameters() if "lora_" in n}
    body = {n: p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    assert lora and set(lora.values()) == {torch.float32} and set(body.values()) == {torch.bfloat16}
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_gradient_checkpointing_gives_the_same_loss_and_adapter_gradients(tiny):  # noqa: F811
    """As the Trainer turns it on: every decoder layer recomputes its activations in the backward
    pass; the loss (whose shared instruction prefix is then computed per row) and the LoRA
    gradients are those of the plain pass."""
    model, tok = load(str(tiny))
    model = add_lora(model, LoraParams(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj", "down_proj")))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # B starts at 0: random, so every path carries gradient
    instruction = "Decide whether the user will like the movie. Answer Yes. or No.\n"
    prompts = [
        instruction + "liked: a, b\n### Response:\n",
        instruction + "liked: c, d, e, f\n### Response:\n",
        instruction + "x\n### Response:\n",
    ]
    batch = PadCollator(tok.pad_token_id)(encode(prompts, ["Yes.", "No.", "No."], tok, max_length=128))
    model.train()

    def loss_and_grads():
        model.zero_grad()
        loss = mean_batch_loss(answer_loss, model, dict(batch))[0]
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, plain_grads = loss_and_grads()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    checkpointed, grads = loss_and_grads()
    assert torch.allclose(checkpointed, plain, rtol=1e-5)
    assert plain_grads.keys() == grads.keys() and len(grads) == 12
    for name, grad in plain_grads.items():
        assert grad.abs().sum() > 0 and torch.allclose(grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_training_with_gradient_checkpointing_matches_training_without(tiny, built, tmp_path):  # noqa: F811
    root, _ = built
    seen = {}

    def run(on):
        def validate(model, tok, valid):
            seen[on] = any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
            return {}

        return train(
            root / "sample" / "train.parquet",
            root / "sample" / "valid.parquet",
            tmp_path / str(on),
            tmp_path / f"{on}.json",
            ModelParams(name=str(tiny)),
            LoraParams(rank=4, alpha=8, dropout=0.0),
            TrainParams(epochs=1, batch_size=4, lr=1e-2, dtype="float32", gradient_checkpointing=on),
            seed=0,
            live_dir=tmp_path / f"live-{on}",
            checkpoints=tmp_path / "ckpt",
            validate=validate,
        )

    without, with_ = run(False), run(True)
    assert seen == {False: False, True: True}
    assert with_["train_loss"] == pytest.approx(without["train_loss"], rel=1e-4)
