"""The `sample` section: the K-shot training set."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from recpipe.params.core import Strict


class SampleParams(Strict):
    k: int | None = Field(
        64,
        ge=1,
        description="How many training samples (shots) to draw for LoRA tuning; null: every training sample (the data curve's end), shuffled.",
    )
    balanced: bool = Field(
        True, description="Draw as many liked as disliked samples (k // 2 disliked); with k null, every sample is kept."
    )
    valid_size: int = Field(
        100,
        ge=1,
        description="Validation samples, for model selection only; scoring them is part of the train stage's time.",
    )


Sample = Annotated[SampleParams, Field(default_factory=SampleParams, description="The K-shot training set.")]
