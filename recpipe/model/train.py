"""The `train` and `p5_train` stages (and `pretrain`'s loop): LoRA-tune the model on the K-shot set,
loss on the answer tokens only.

train() is one loop for every task: a Task brings its rows, its collator and its loss (by default
TALLRec's and P5's prompt/answer rows with the answer-only loss), and may add tokens and modules
to the model that are trained and saved with the adapter (RecSysLLM's masked pretraining)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import torch

from recpipe import RecpipeError, log
from recpipe.io import atomic_dir, read_parquet, write_json
from recpipe.params.model import ModelParams
from recpipe.params.train import LoraParams, TrainParams

IGNORE = -100  # label value the loss skips


@dataclass(frozen=True)
class Validator:
    """Scores the tuned model on the validation rows: score(model, tokenizer, rows) -> metrics.
    `metric`, one of those metrics, picks the best step under train.eval_steps: lower is better
    for a name ending in "loss" (the Trainer's rule), higher for any other."""

    score: Callable[[Any, Any, pl.DataFrame], dict]
    metric: str

    def __call__(self, model, tokenizer, valid: pl.DataFrame) -> dict:
        return self.score(model, tokenizer, valid)


def loss_validator(task: Task, batch_size: int) -> Validator:
    """The validator of any task: its mean loss per target on its own validation rows
    (valid_loss); the validation DataFrame it is handed is not read."""

    def score(model, tokenizer, valid) -> dict:
        return {"valid_loss": round(mean_loss(model, task.valid, task.collate, task.loss, batch_size), 5)}

    return Validator(score, "valid_loss")


def encode(
    prompts: list[str], answers: list[str], tokenizer, max_length: int, spans: list[list[list[int]]] | None = None
) -> list[dict]:
    """Token ids of prompt + answer + EOS; labels mask the prompt. Long prompts lose their start,
    never the question at their end. `spans`: per prompt, [start, end, ...] character ranges of
    the prompt whose tokens are targets too (recpipe.p5.families: history items)."""
    rows = []
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        ranges = spans[i] if spans is not None and spans[i] is not None else []
        enc = tokenizer(prompt, return_offsets_mapping=bool(ranges))
        p = enc.input_ids
        labels = [IGNORE] * len(p)
        if ranges:
            for j, (start, end) in enumerate(enc.offset_mapping):
                if any(start < r[1] and r[0] < end for r in ranges):
                    labels[j] = p[j]
        a = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        keep = max(max_length - len(a), 1)
        rows.append({"input_ids": p[-keep:] + a, "labels": labels[-keep:] + a})
    return rows


class PadCollator:
    """Pads each batch to its own longest row (the trainer groups rows of similar length); rows
    with intra_ids (recsysllm.dynamic_positions) get them padded with 0."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), self.pad_id)
        labels = torch.full((len(rows), n), IGNORE)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        intra = torch.zeros((len(rows), n), dtype=torch.long) if "intra_ids" in rows[0] else None
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k] = torch.tensor(r["input_ids"])
            labels[i, :k] = torch.tensor(r["labels"])
            mask[i, :k] = 1
            if intra is not None:
                intra[i, :k] = torch.tensor(r["intra_ids"])
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        return batch if intra is None else {**batch, "intra_ids": intra}


def answer_loss(model, batch: dict[str, torch.Tensor], intra=None):
    """Summed cross-entropy over the labelled tokens (the answer, and any prompt tokens `encode`
    marked), their count, and the model's output.

    Two savings, the same loss up to float rounding:
    - The output layer (576 x 49,152 for SmolLM2-135M) is a fifth of the model's arithmetic, and
      the cross-entropy over every position's 49,152 logits is a large memory-bound pass; but
      only the labelled positions need logits, so only theirs are computed.
    - Every prompt of a batch may start with the same instruction (about a quarter of a TALLRec
      prompt's tokens): its keys and values are computed once, with gradients, and every row
      attends to that copy (PrefixCache). LoRA dropout then draws one mask for that shared part.
      Not under gradient checkpointing, whose layers drop any cache they are given: there every
      row computes its whole prompt.

    intra: the model's intra embedding, added at the batch's intra_ids (recsysllm.dynamic_positions)."""
    from recpipe.model.decoding import PrefixCache, model_inputs, shared_prefix_length

    targets, columns = labelled_columns(batch)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    intra_ids = batch.get("intra_ids")
    shared = shared_prefix_length(ids, int(columns.min())) if len(ids) > 1 and not checkpointing(model) else 0
    # A token's intra id depends only on the tokens before it: the shared prefix's are every row's.
    cache = PrefixCache(
        model, ids[:1, :shared], intra_ids=None if intra is None else intra_ids[:1, :shared], intra=intra
    ).rows(len(ids))
    inputs = model_inputs(model, ids[:, shared:], None if intra is None else intra_ids[:, shared:], intra)
    out = model(
        **inputs, attention_mask=mask, cache=cache, use_cache=cache is not None, logits_to_keep=columns - shared
    )
    return summed_loss(out, targets[:, columns])


def checkpointing(model) -> bool:
    """Whether this pass runs under gradient checkpointing, whose layers drop any cache they are
    given (so no shared-prefix cache then)."""
    return (
        model.training
        and torch.is_grad_enabled()
        and any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    )


def labelled_columns(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The next-token targets (position t predicts token t + 1) and the positions any row of the
    batch has a target at: only those need logits."""
    targets = batch["labels"][:, 1:]
    return targets, (targets != IGNORE).any(dim=0).nonzero().squeeze(-1)


def summed_loss(out, wanted: torch.Tensor):
    """Summed cross-entropy of the output's logits against `wanted` (IGNORE skipped), the number
    of targets, and the output."""
    loss = torch.nn.functional.cross_entropy(
        out.logits.float().flatten(0, 1), wanted.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    return loss, (wanted != IGNORE).sum(), out


def mean_batch_loss(loss_fn: Callable, model, inputs: dict, num_items_in_batch=None):
    """loss_fn's summed loss over the batch's targets, or over the Trainer's count of targets
    across the accumulated batches when it passes one; and the model's output."""
    loss, n, out = loss_fn(model, inputs)
    return loss / (num_items_in_batch if num_items_in_batch is not None else n), out


def answer_loss_trainer():
    """The HF Trainer with a task's loss (`task_loss`: answer_loss unless train() sets another). Its
    evaluation, when eval_steps asks for one, is `validator` on the `valid` rows with
    `valid_tokenizer` (set on the instance; not the Trainer's processing_class, which it would
    save into every checkpoint): the Trainer's own machinery then keeps the best checkpoint
    (load_best_model_at_end), the EarlyStoppingCallback counts patience, and dvclive gets the
    scores through the log."""
    from transformers import Trainer

    class AnswerLossTrainer(Trainer):
        validator: Validator | None = None
        valid: pl.DataFrame | None = None
        valid_tokenizer: Any = None

        task_loss = staticmethod(answer_loss)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, out = mean_batch_loss(self.task_loss, model, inputs, num_items_in_batch)
            return (loss, out) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            scores = self.validator(self.model, self.valid_tokenizer, self.valid)
            if scores.get(self.validator.metric) is None:
                raise RecpipeError(
                    f"train.eval_steps: the validation {self.validator.metric} is undefined (is the validation split all one label?), so no step can be picked"
                )
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in scores.items()}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics  # training_step puts the model back in training mode

    return AnswerLossTrainer


@torch.no_grad()
def mean_loss(model, rows: list[dict], collate: Callable, loss_fn: Callable, batch_size: int) -> float:
    """Validation loss: mean cross-entropy per target token, batches grouped by length."""
    model.eval()
    device = next(model.parameters()).device
    rows = sorted(rows, key=lambda r: len(r["input_ids"]))
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collate(rows[start : start + batch_size]).items()}
        loss, n, _ = loss_fn(model, batch)
        total, count = total + loss.item(), count + int(n)
    return total / max(count, 1)


@dataclass
class Task:
    """What one run learns; train() is the same loop for every task.

    rows and valid: training and validation rows, each with its input_ids (their lengths group
    the batches); collate: rows -> batch; loss: (model, batch) -> (summed loss, target count,
    output); key: what identifies the data (a checkpoint resumes only the same run); lora_extras:
    more LoraConfig fields, e.g. trainable_token_indices (new token rows) or modules_to_save
    (modules the task added to the model), trained and saved with the adapter.

    lora_from: a saved adapter folder (trained with the same LoRA params) whose LoRA weights the
    new adapter starts from; train_lora False keeps the LoRA weights as they start, so that only
    lora_extras' rows and modules train (CoLLM's second step, recpipe.model.collab); finish(folder):
    rewrites the saved adapter folder before it is published (e.g. moves a module into files of
    its own)."""

    rows: list[dict]
    valid: list[dict]
    collate: Callable
    loss: Callable = answer_loss
    key: Any = None
    lora_extras: dict = field(default_factory=dict)
    lora_from: str | Path | None = None
    train_lora: bool = True
    finish: Callable[[Path], None] | None = None


# (model, tokenizer) -> Task, called after loading and before LoRA: it may add tokens and modules.
TaskBuilder = Callable[[Any, Any], Task]


def answer_task(train_path, valid_path, max_length: int, positions: Callable | None = None) -> TaskBuilder:
    """TALLRec's and P5's task: prompt/answer rows (P5's with `spans`, history items as targets
    too) and the answer-only loss. positions: (model, tokenizer) -> Positions or None
    (recpipe.recsysllm.positions.EntityPositions): each row then gets the intra ids scoring gives
    the same text."""

    def build(model, tokenizer) -> Task:
        shots, valid = read_parquet(train_path), read_parquet(valid_path)
        spans = shots["spans"].to_list() if "spans" in shots.columns else None
        prompts, answers = shots["prompt"].to_list(), shots["answer"].to_list()
        rows = encode(prompts, answers, tokenizer, max_length, spans)
        valid_rows = encode(valid["prompt"].to_list(), valid["answer"].to_list(), tokenizer, max_length)
        intra = positions(model, tokenizer) if positions is not None else None
        if intra is None:
            return Task(
                rows=rows, valid=valid_rows, collate=PadCollator(tokenizer.pad_token_id), key=(prompts, answers, spans)
            )
        rows, valid_rows = (
            [{**r, "intra_ids": intra.run(r["input_ids"])[0]} for r in part] for part in (rows, valid_rows)
        )
        # The embedding module itself: the adapter, which does not target it, leaves it in place.
        return Task(
            rows=rows,
            valid=valid_rows,
            collate=PadCollator(tokenizer.pad_token_id),
            loss=partial(answer_loss, intra=intra.embedding),
            key=(prompts, answers, spans, "intra positions"),
        )

    return build


DEEPSPEED_CONFIGS = Path(__file__).parents[1] / "configs" / "deepspeed"


def deepspeed_config(name: str | None) -> str | None:
    """train.deepspeed: None, a shipped config's name (zero2, zero3) or a path to a json file."""
    if name is None:
        return None
    path = DEEPSPEED_CONFIGS / f"{name}.json" if "/" not in name and not name.endswith(".json") else Path(name)
    if not path.is_file():
        shipped = sorted(p.stem for p in DEEPSPEED_CONFIGS.glob("*.json"))
        raise RecpipeError(f"train.deepspeed {name!r}: no such config (shipped: {shipped}, or a path to a .json file)")
    return str(path)


def single_process_env() -> None:
    """A run started without a launcher (CPU here, or `python stages/train.py` on one GPU): give
    DeepSpeed the rendezvous variables a launcher would have set."""
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launched() -> bool:
    """Started by a multi-process launcher (torchrun, deepspeed), which gives each process its GPU."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def check_precision(dtype: torch.dtype, device: torch.device) -> None:
    if dtype == torch.float16 and device.type != "cuda":
        raise RecpipeError(
            f"train.dtype float16: the Trainer trains in float16 on CUDA only, and model.device is {device}; use bfloat16 or float32 (or auto)"
        )


def pin_device(args, device: torch.device) -> None:
    """One process on one CUDA device: without a launcher the Trainer takes cuda:0 and, with more
    GPUs visible, wraps the model in DataParallel, which splits each batch over copies of the model
    (and breaks the answer-only loss, whose shared prefix runs once per batch). Pinned to `device`
    instead: the Trainer places the model and each batch there."""
    _ = args.device  # the Trainer's own device setup first: it makes cuda:0 the current device
    torch.cuda.set_device(device)  # an index-less "cuda" (accelerate's batches) is this device now
    args.__dict__["_setup_devices"] = device  # the cached value behind args.device
    args._n_gpu = 1


def add_lora(model, lora: LoraParams, **extras):
    """The model with a fresh LoRA adapter; `extras`: more LoraConfig fields (Task.lora_extras)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
        **extras,
    )
    model = get_peft_model(model, config)
    # Never the whole embedding matrices: peft saves them with every checkpoint and adapter when
    # the vocabulary grew (new tokens, whose rows trainable_token_indices saves alone) and looks
    # the base model's config up on the Hub to find out.
    model.save_pretrained = partial(model.save_pretrained, save_embedding_layers=False)
    return model


def load_lora(model, folder, lora: LoraParams) -> None:
    """Set the model's new LoRA weights to those of the adapter saved in `folder`, which must have
    been trained with the same LoRA params (else its weights would not fit, or mean another scale)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
        weights = load_file(folder / "adapter_model.safetensors")
    except (OSError, ValueError) as e:
        raise RecpipeError(f"{folder}: no readable LoRA adapter to start from ({type(e).__name__}: {e})") from None
    targets = config.get("target_modules")
    saved = (config.get("r"), config.get("lora_alpha"), sorted(targets) if isinstance(targets, list) else targets)
    wanted = (lora.rank, lora.alpha, sorted(lora.target_modules))
    if saved != wanted:
        raise RecpipeError(
            f"{folder}: its adapter has (rank, alpha, target modules) {saved} but the lora params say {wanted}; start from an adapter trained with the same LoRA params"
        )
    # Over the adapter's own state: its other parts (modules_to_save, token rows) keep their start.
    result = set_peft_model_state_dict(model, {**get_peft_model_state_dict(model), **weights})
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise RecpipeError(
            f"{folder}: its adapter does not fit this model ({len(result.unexpected_keys)} unknown and {len(missing)} missing LoRA weights)"
        )


def freeze_lora(model) -> None:
    """Keep the adapter's LoRA weights as they are: only the task's other trainable parts train."""
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(False)


def canonical_json(path: Path, base_model: str) -> None:
    """Rewrite a saved adapter config with sorted keys and sorted name lists: peft keeps
    target_modules as a set, whose order follows Python's per-process string hashing, so the same
    adapter would get different bytes (and DVC would rerun every stage after it) from run to run.
    The base model is `base_model` as params name it, not the folder it was loaded from (for a GGUF
    file, a cache folder that differs from machine to machine)."""
    config = json.loads(path.read_text())
    config = {
        k: sorted(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v for k, v in config.items()
    }
    config["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def run_key(*parts) -> str:
    """A short hash of everything that shapes a run: a checkpoint resumes only the same run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def last_checkpoint(ckpt_dir: Path) -> tuple[Path, int] | None:
    """The newest checkpoint written to the end, and its step. The Trainer writes trainer_state.json
    last, so a run stopped in the middle of a save leaves a newer folder without it (or with it cut
    short): such a folder is removed, and the run resumes from the one before it."""
    found = None
    folders = [p for p in Path(ckpt_dir).glob("checkpoint-*") if p.name.removeprefix("checkpoint-").isdigit()]
    for path in sorted(folders, key=lambda p: int(p.name.removeprefix("checkpoint-"))):
        try:
            json.loads((path / "trainer_state.json").read_text())
            found = path, int(path.name.removeprefix("checkpoint-"))
        except (OSError, ValueError):
            log.warning("train: %s was not written to the end (stopped while saving): removing it", path)
            shutil.rmtree(path, ignore_errors=True)
    return found


def train(
    train_path,
    valid_path,
    out_dir,
    metrics_path,
    model_p: ModelParams,
    lora: LoraParams,
    params: TrainParams,
    seed: int,
    live_dir="dvclive/train",
    checkpoints=".recpipe/checkpoints",
    validate: Validator | None = None,
    run_path=None,
    task: TaskBuilder | None = None,
    init: Callable | None = None,
) -> dict:
    """LoRA-tune and save the adapter. `task` builds what is learnt (None: answer_task on
    train_path's and valid_path's prompt/answer pairs); `init(model, tokenizer)` returns the model
    to put the new adapter on (None: the base model as loaded; recpipe.recsysllm: the pretrained
    one). `validate(model, tokenizer, valid)` scores the tuned model on valid_path's rows and returns
    its metrics (TALLRec: valid_auc); None: the task's mean loss on its validation rows
    (valid_loss), which fits any task. metrics_path gets the metrics
    only (the losses and validation scores `dvc metrics diff` compares); run_path, if given, how the
    run went (seconds, tokens/s, dtype), which differ from run to run and machine to machine.

    params.eval_steps: the validator also runs every that many optimizer steps (and at the last
    one); the adapter saved is the best-scoring step's, and metrics_path records that step
    (best_step) and its score. params.patience stops the run after that many evaluations without a
    better score. A resumed run keeps its best score, best checkpoint and patience count: they
    are part of each checkpoint's trainer state.

    The model runs on model_p.device; its frozen weights are loaded in params.dtype, and the LoRA
    weights stay float32 (peft's default): the optimizer updates float32 weights, and float16 loss
    scaling unscales float32 gradients only."""
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed
    from transformers.integrations import DVCLiveCallback

    from dvclive import Live
    from recpipe.model.attention import pick_attention
    from recpipe.model.load import load, pick_device, pick_dtype

    device = pick_device(model_p.device)  # a device this machine lacks fails here, before loading
    dtype = pick_dtype(params.dtype, device)
    check_precision(dtype, device)
    ds_config = deepspeed_config(params.deepspeed)
    one_gpu = device.type == "cuda" and not launched() and not ds_config
    if model_p.device.startswith("cuda:") and (launched() or (ds_config and device.index != 0)):
        raise RecpipeError(
            f"model.device {model_p.device!r}: under a launcher or DeepSpeed each process takes its own GPU; use auto or cuda, and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    if ds_config:
        single_process_env()
    model, tokenizer = load(
        model_p.name, model_p.sha256, dtype=dtype, attention=pick_attention(model_p.attention, device)
    )
    # Seeded after loading: a first load builds the dequantized model, which draws random numbers,
    # and LoRA's initial weights must not depend on whether the model was cached already.
    set_seed(seed)
    if init is not None:
        model = init(model, tokenizer)
    job = (task or answer_task(train_path, valid_path, params.max_length))(model, tokenizer)
    model = add_lora(model, lora, **job.lora_extras)
    if job.lora_from is not None:
        load_lora(model, job.lora_from, lora)
    if not job.train_lora:
        freeze_lora(model)
    rows = job.rows
    # A starting point other than the base model names itself (`init.key`, e.g. the pretrained
    # adapter's hash): a checkpoint must not resume on top of another start.
    start_key = () if init is None else (getattr(init, "key", repr(init)),)
    key = run_key(model_p, lora, params, seed, *start_key, *(job.key if job.key is not None else (rows,)))
    ckpt_dir = Path(checkpoints) / key
    validator = validate if validate is not None else loss_validator(job, params.eval_batch_size)
    selecting = params.eval_steps is not None  # evaluate during training, keep the best step
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.grad_accum,
        learning_rate=params.lr,
        num_train_epochs=params.epochs,
        warmup_steps=params.warmup_steps,
        weight_decay=params.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="steps" if params.save_steps or selecting else "epoch",
        save_steps=params.save_steps or params.eval_steps or 500,  # unused with save_strategy "epoch"
        save_total_limit=1,  # under load_best_model_at_end the Trainer keeps the best one too
        eval_strategy="steps" if selecting else "no",
        eval_steps=params.eval_steps,
        load_best_model_at_end=selecting,
        metric_for_best_model=validator.metric if selecting else None,
        # The early-stopping count is saved in each checkpoint's trainer state; restore it on resume.
        restore_callback_states_from_checkpoint=selecting,
        train_sampling_strategy="group_by_length",
        seed=seed,
        data_seed=seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=device.type == "cpu",
        activation_checkpointing=params.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},  # with peft: no input-gradient hook needed
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
        deepspeed=ds_config,
    )
    if one_gpu:
        pin_device(args, device)
    # Only the first process logs: a second Live on another rank would clear the same folder.
    main_process = int(os.environ.get("RANK", "0")) == 0
    callbacks = (
        [DVCLiveCallback(live=Live(live_dir, dvcyaml=None, save_dvc_exp=False, report=None))] if main_process else []
    )
    if params.patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=params.patience))
    valid = read_parquet(valid_path) if validate is not None else None
    trainer = answer_loss_trainer()(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=job.collate,
        callbacks=callbacks,
        eval_dataset=job.valid
        if selecting
        else None,  # read by our evaluate() only: the Trainer asks that there be one
    )
    trainer.task_loss = job.loss
    trainer.validator, trainer.valid, trainer.valid_tokenizer = validator, valid, tokenizer
    resume = last_checkpoint(ckpt_dir)
    if resume:
        log.info("train: resuming from %s, step %d", resume[0], resume[1])
    start = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    seconds = time.time() - start
    # Tokens/s of this process only: a resumed run did the first steps elsewhere.
    state = trainer.state
    done = 1 - (resume[1] if resume else 0) / max(state.global_step, 1)
    tokens = sum(len(r["input_ids"]) for r in rows) * state.epoch * done  # epochs run: early stopping ends sooner
    if selecting:  # the Trainer has loaded the best step's adapter; its score is known
        validation = {validator.metric: state.best_metric, "best_step": state.best_global_step}
    else:
        validation = {**validator(model, tokenizer, valid), "best_step": state.global_step}
    # The mean over every step: result.training_loss covers only the steps this process ran, and a
    # resumed run has the earlier steps' losses in the trainer state it restored.
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    train_loss = sum(losses) / len(losses) if losses else result.training_loss
    metrics = {"train_loss": round(train_loss, 5), **validation, "steps": state.global_step}
    run = {
        "train_seconds": round(seconds, 1),
        "train_tokens_per_second": round(tokens / seconds, 1),
        "dtype": str(dtype).removeprefix("torch."),
    }
    # Under a multi-process launcher every rank runs the lines above (a ZeRO-3 forward or save
    # needs them all), but only the first process writes files.
    staging = Path(out_dir).parent / f".{Path(out_dir).name}.staging"
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
    trainer.save_model(str(staging))  # gathers ZeRO-3 shards; writes on the main process only
    if trainer.is_world_process_zero():
        with atomic_dir(out_dir) as tmp:
            for f in staging.iterdir():
                # Not the run's settings (a pickle) nor peft's model card template (its base model
                # is the folder the model was loaded from, which differs from machine to machine).
                if f.name not in ("training_args.bin", "README.md"):
                    shutil.move(f, tmp / f.name)
            tokenizer.save_pretrained(tmp)
            if job.finish is not None:
                job.finish(tmp)
            canonical_json(tmp / "adapter_config.json", model_p.name)
        shutil.rmtree(staging, ignore_errors=True)
        write_json(metrics, metrics_path)
        if run_path is not None:
            write_json(run, run_path)
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: nothing left to resume
        log.info("train: %s, %s", metrics, run)
    return metrics
