"""The `evaluate` section: scoring the test split (and cross-domain scoring)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from recpipe.params.core import DatasetName, Strict
from recpipe.params.instructions import InstructionsParams


class EvaluateParams(Strict):
    batch_size: int = Field(16, ge=1, description="Test prompts scored at once.")
    # float32 by default: on 256 TALLRec test prompts a bfloat16 body (float32 logits) moved P(yes)
    # by up to 0.02 and the AUC from 0.597 to 0.564 (benchmarks/eval_throughput.py). Either dtype
    # repeats to the bit on the same CPU with the same number of threads, and only there.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Precision of the model body when scoring (the scored logits are float32 always); float32: the scores a reviewer can compare; auto: bfloat16 where model.device runs it fast (CUDA with bf16, or a CPU with AVX512-BF16/AMX), about 3x faster on such a CPU but it moves the AUC by a few hundredths; float16 is meant for GPUs without bf16.",
    )
    dataset: DatasetName | None = Field(
        None,
        description="Cross-domain: score the tuned adapter on this dataset's test split instead (one of `datasets`), as TALLRec's movie-to-book transfer; null: the test split of `dataset`, the one trained on.",
    )
    instructions: InstructionsParams | None = Field(
        None,
        description="How the instructions stage builds the samples of evaluate.dataset (its template, like_threshold, split, ...); null: the top-level `instructions`.",
    )

    @model_validator(mode="after")
    def _other_dataset(self) -> EvaluateParams:
        if self.instructions is not None and self.dataset is None:
            raise ValueError(
                "instructions: only with evaluate.dataset set; the training dataset's test split is the one the top-level `instructions` made"
            )
        return self


Evaluate = Annotated[EvaluateParams, Field(default_factory=EvaluateParams, description="Scoring the test split.")]


def scored(p) -> tuple[str, InstructionsParams]:
    """The dataset whose test split the evaluate stages score, and the instructions its samples
    are built with: `dataset`'s own, or evaluate.dataset's (cross-domain). `p`: a params model with
    the dataset, instructions and evaluate keys."""
    if p.evaluate.dataset is None:
        return p.dataset, p.instructions
    return p.evaluate.dataset, p.evaluate.instructions or p.instructions
