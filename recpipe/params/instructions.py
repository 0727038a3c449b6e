"""The `instructions` section: the TALLRec yes/no samples and their split."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from recpipe.params.core import Strict


class InstructionsParams(Strict):
    template: str = Field(
        "tallrec", pattern=r"^[\w.-]+$", description="The prompt template file recpipe/templates/<name>.yaml."
    )
    history_len: int = Field(10, ge=1, description="How many of the user's previous ratings a prompt lists.")
    like_threshold: float = Field(3, description="A rating above this counts as liked (label Yes).")
    split: Literal["temporal", "paper"] = Field(
        "temporal",
        description="temporal: train, valid and test cut in time order, never inside a run of equal timestamps; paper: as TALLRec's code, users in order of first appearance, each in time order (for data without timestamps).",
    )
    pool_size: int | None = Field(
        10_000, ge=10, description="Split only the most recent this many samples; null: all of them."
    )
    fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1),
        description="The train, valid and test shares of the pool: three positive numbers summing to 1.",
    )

    @model_validator(mode="after")
    def _fractions(self) -> InstructionsParams:
        if abs(sum(self.fractions) - 1) > 1e-9 or min(self.fractions) <= 0:
            raise ValueError(
                f"instructions.fractions must be three positive numbers summing to 1, got {self.fractions}"
            )
        return self


Instructions = Annotated[
    InstructionsParams,
    Field(default_factory=InstructionsParams, description="The TALLRec yes/no samples and their split."),
]
