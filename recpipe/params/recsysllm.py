"""The `recsysllm` section: RecSysLLM's masked pretraining."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from recpipe.params.core import DatasetName, Strict
from recpipe.params.train import WIDE_LORA, LoraParams, TrainParams


class SamplingParams(Strict):
    """Which of a user's events make up their pretraining text (recpipe.recsysllm.corpus)."""

    mode: Literal["temporal", "uniform", "recent"] = Field(
        "temporal",
        description="temporal: drawn from the long-, medium- and short-term windows by `shares`; uniform: drawn from the whole history; recent: the last ones.",
    )
    length: int = Field(20, ge=1, description="Events per behaviour sequence (all of them for a shorter history).")
    shares: tuple[float, float, float] = Field(
        (0.1, 0.3, 0.6),
        description="The long-, medium- and short-term shares of a sequence (temporal mode): three numbers >= 0 summing to 1.",
    )
    short_days: float = Field(
        7, gt=0, description="Short-term: events at most this many days before the user's last one."
    )
    medium_days: float = Field(
        90,
        gt=0,
        description="Medium-term: events up to this many days before the user's last one (older ones are long-term); above short_days.",
    )

    @model_validator(mode="after")
    def _windows(self) -> SamplingParams:
        if min(self.shares) < 0 or abs(sum(self.shares) - 1) > 1e-6:
            raise ValueError(
                f"recsysllm.sampling.shares must be three numbers >= 0 summing to 1, got {list(self.shares)}"
            )
        if self.short_days >= self.medium_days:
            raise ValueError(
                f"recsysllm.sampling.short_days ({self.short_days}) must be below medium_days ({self.medium_days})"
            )
        return self


Objective = Literal["entity", "sentence", "document"]


class RecsysllmParams(Strict):
    """RecSysLLM's masked pretraining: GLM-style blank infilling over each user's text and behaviour
    sequence, never splitting an entity. Opt-in: one pretrain stage per dataset in `datasets`."""

    datasets: tuple[DatasetName, ...] = Field(
        (),
        description="The datasets to pretrain on, each one of the top-level `datasets`; empty: no pretrain stage at all.",
    )
    sampling: SamplingParams = Field(SamplingParams(), description="The behaviour sequence of each user's text.")
    objectives: dict[Objective, float] = Field(
        {"entity": 0.6, "sentence": 0.2, "document": 0.2},
        description="The mix of blanks, one kind drawn per text by weight (>= 0, at least one above 0): entity (spans of whole entities, Poisson span lengths), sentence (whole sentences), document (the text's end).",
    )
    ratio: float = Field(
        0.15,
        gt=0,
        lt=1,
        description="The share of a text's units (entities and other tokens) that entity and sentence blanks cover, in (0, 1).",
    )
    span_mean: float = Field(3.0, gt=0, description="The Poisson mean of an entity blank's length, in units.")
    document: tuple[float, float] = Field(
        (0.5, 1.0),
        description="The range of the share of a text's tokens that a document blank covers: [low, high] within (0, 1].",
    )
    whole_entities: bool = Field(
        True,
        description="Mask entities whole (an item name or attribute is blanked whole or not at all); false: single tokens, GLM's own masking (the ablation).",
    )
    order: Literal["chronological", "random"] = Field(
        "chronological",
        description="The order of the blanks in part B: chronological (their order in the text) or random (GLM's, the ablation).",
    )
    positions_2d: bool = Field(
        True,
        description="2D positions: part-B tokens take their blank's position and a learnable intra-position embedding is added; false: plain positions 0, 1, 2, ... over parts A and B and no intra embedding.",
    )
    dynamic_positions: bool = Field(
        True,
        description="Fine-tuning and scoring from a pretraining with 2D positions (train.init or p5.train.init pretrained) add its intra embedding, each token's intra id decided by a trie of the pretraining corpus's entities as the text is read or written (recpipe.recsysllm.positions), in likelihood ranking and in beam search alike. false: the intra embedding is left unused.",
    )
    copies: int = Field(1, ge=1, description="Samples of each text per epoch, each with its own blanks.")
    valid_size: int = Field(
        20, ge=1, description="Users whose texts are held out of pretraining to measure its validation loss."
    )
    lora: LoraParams = Field(
        WIDE_LORA,
        description="The pretraining adapter: merged into the model that train.init or p5.train.init `pretrained` fine-tunes, so its rank is independent of theirs.",
    )
    train: TrainParams = Field(
        TrainParams(epochs=1, save_steps=50),
        description="The pretraining run: one epoch, a checkpoint every 50 steps; texts longer than max_length are left out, with a warning; init must stay base.",
    )

    @model_validator(mode="after")
    def _infill(self) -> RecsysllmParams:
        if any(w < 0 for w in self.objectives.values()) or not any(self.objectives.values()):
            raise ValueError(
                f"recsysllm.objectives must be >= 0 with at least one above 0, got {dict(self.objectives)}"
            )
        lo, hi = self.document
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"recsysllm.document must be a range [low, high] within (0, 1], got {list(self.document)}")
        if self.train.init != "base":
            raise ValueError("recsysllm.train.init must be base: pretraining starts from the base model")
        return self

    def intra_positions(self, init: str) -> bool:
        """Whether a model fine-tuned from `init` (train.init, p5.train.init) is trained and scored
        with intra positions (dynamic_positions on a pretraining with 2D positions)."""
        return init == "pretrained" and self.positions_2d and self.dynamic_positions


Recsysllm = Annotated[
    RecsysllmParams, Field(default_factory=RecsysllmParams, description="RecSysLLM's masked pretraining.")
]
