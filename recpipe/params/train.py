"""LoRA adapters and their training: the `lora` and `train` sections, also p5's and recsysllm's."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from recpipe.params.core import Strict


class LoraParams(Strict):
    rank: int = Field(8, ge=1, description="LoRA rank r: the size of the low-rank update to each adapted weight.")
    alpha: int = Field(16, ge=1, description="LoRA alpha: the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input, in [0, 1).")
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "v_proj"), description="The names of the linear layers that get an adapter."
    )


# An adapter on every linear layer of the blocks (the P5 model's and the pretraining's).
WIDE_LORA = LoraParams(
    rank=16,
    alpha=32,
    dropout=0.0,
    target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
)


class TrainParams(Strict):
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW), reached after the warmup steps.")
    epochs: float = Field(
        4,
        gt=0,
        description="Passes over the training samples, at most: early stopping (patience) can end sooner; a fraction stops part way. The learning rate decays linearly over all of them.",
    )
    batch_size: int = Field(8, ge=1, description="Samples per device per step.")
    grad_accum: int = Field(
        1,
        ge=1,
        description="Steps whose gradients add up to one optimizer step (effective batch: batch_size x grad_accum).",
    )
    max_length: int = Field(
        512,
        ge=16,
        description="Longest prompt plus answer in tokens; a longer prompt loses its start, never the answer or the question at its end.",
    )
    warmup_steps: int = Field(4, ge=0, description="Optimizer steps over which the learning rate rises from 0 to lr.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Precision of the frozen weights and of the forward pass (the LoRA weights stay float32); auto: bfloat16 where model.device runs it fast (CUDA with bf16, or a CPU with AVX512-BF16/AMX), else float32; float16 (with loss scaling) on CUDA only.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each layer's activations in the backward pass instead of keeping them: much less memory for long prompts or big batches, for one more forward pass per step.",
    )
    eval_batch_size: int = Field(16, ge=1, description="Samples per batch when the validation set is scored.")
    save_steps: int | None = Field(
        None,
        ge=1,
        description="A checkpoint every this many optimizer steps, from which a stopped run resumes; null: one each epoch, or one at each evaluation when eval_steps is set (then save_steps must be a multiple of eval_steps).",
    )
    eval_steps: int | None = Field(
        None,
        ge=1,
        description="Score the validation split every this many optimizer steps and at the last one, and save the best-scoring step's adapter (TALLRec: validation AUC); null: score once, after the last step, and save the last step's adapter.",
    )
    patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations in a row without a better validation score (needs eval_steps); null: run all the epochs.",
    )
    deepspeed: str | None = Field(
        None,
        description="null: the plain trainer; zero2 or zero3 (recpipe/configs/deepspeed/<name>.json) or a json path: DeepSpeed, for GPUs.",
    )
    init: Literal["base", "pretrained"] = Field(
        "base",
        description="Where training starts: base, the base model; pretrained, the base model with the dataset's RecSysLLM masked pretraining merged in (data/recsysllm/<dataset>/pretrained: list the dataset in recsysllm.datasets); evaluation then starts from it too.",
    )

    @model_validator(mode="after")
    def _selection(self) -> TrainParams:
        if self.patience is not None and self.eval_steps is None:
            raise ValueError("patience counts evaluations: set eval_steps too")
        if self.eval_steps is not None and self.save_steps is not None and self.save_steps % self.eval_steps:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}), so that the best evaluated step has a checkpoint"
            )
        return self


Lora = Annotated[LoraParams, Field(default_factory=LoraParams, description="The TALLRec model's LoRA adapter.")]
Train = Annotated[TrainParams, Field(default_factory=TrainParams, description="The TALLRec model's training.")]
