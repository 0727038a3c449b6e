"""The `collab` section: the collaborative encoders (BPR-MF, SASRec) and the collaborative tokens
that hand their embeddings to the LLM (CoLLM); also the P5 baselines' SASRec and BPR-MF settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from recpipe.params.core import DatasetName, Strict
from recpipe.params.train import TrainParams


class SasrecParams(Strict):
    max_len: int = Field(
        50,
        ge=2,
        description="SASRec reads the last this many items of a history; a longer training sequence is cut into windows of this many targets, so every position is learned.",
    )
    hidden: int = Field(64, ge=8, description="Embedding and hidden size; a multiple of heads.")
    blocks: int = Field(2, ge=1, description="Self-attention blocks.")
    heads: int = Field(1, ge=1, description="Attention heads per block.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on embeddings and in each block, in [0, 1).")
    loss: Literal["ce", "bce"] = Field(
        "ce",
        description="Objective ranking's loss: ce, softmax cross-entropy over every item at every position; bce, binary cross-entropy of the next item against one sampled item the user never had in training (the paper's). Objective labels always uses binary cross-entropy of the next interaction's label.",
    )
    epochs: int = Field(
        200,
        ge=1,
        description="The most training passes; early stopping on the validation NDCG@10 (objective ranking) or AUC (labels) usually ends sooner.",
    )
    patience: int = Field(
        10,
        ge=1,
        description="Stop after this many epochs without a better validation NDCG@10 (objective ranking) or AUC (labels); the best epoch's weights are kept.",
    )
    batch_size: int = Field(128, ge=1, description="Training sequences per step.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    threads: int = Field(
        1,
        ge=1,
        description="Torch threads while SASRec trains and scores. Its ops are small: one thread keeps the time predictable on a busy machine, where more threads can wait on each other.",
    )

    @model_validator(mode="after")
    def _heads(self) -> SasrecParams:
        if self.hidden % self.heads:
            raise ValueError(f"sasrec.hidden ({self.hidden}) must be divisible by sasrec.heads ({self.heads})")
        return self


class BprmfParams(Strict):
    dim: int = Field(64, ge=1, description="Embedding size of users and items.")
    reg: float = Field(
        0.0,
        ge=0,
        description="L2 penalty on the user, positive and negative embeddings of each training triple (objective labels: on the user and item embeddings of each labelled pair).",
    )
    epochs: int = Field(
        300,
        ge=1,
        description="The most training passes over the training interactions; early stopping on the validation NDCG@10 (objective ranking) or AUC (labels) usually ends sooner.",
    )
    patience: int = Field(
        10,
        ge=1,
        description="Stop after this many epochs without a better validation NDCG@10 (objective ranking) or AUC (labels); the best epoch's weights are kept.",
    )
    batch_size: int = Field(
        1024, ge=1, description="(user, item, sampled negative) triples per step (objective labels: labelled pairs)."
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    threads: int = Field(1, ge=1, description="Torch threads while BPR-MF trains and scores.")


Token = Literal["user", "history", "target"]


class CollabParams(Strict):
    """CoLLM's collaborative tokens: BPR-MF or SASRec embeddings of the user and the items, mapped by
    a small MLP (the projector) into the LLM's input embeddings beside the item names. Opt-in: one
    collab stage per dataset in `datasets` trains the encoders; `model` switches the tokens on."""

    datasets: tuple[DatasetName, ...] = Field(
        (),
        description="The datasets to train the collaborative encoders on (collab@<dataset>), each one of the top-level `datasets`; empty: no collab stages.",
    )
    model: Literal["none", "mf", "sasrec"] = Field(
        "none",
        description="The encoder whose embeddings the TALLRec model gets as tokens: none (text only), mf (BPR-MF's user and item embeddings) or sasrec (SASRec's encoding of the history as the user, its item embeddings); needs `dataset` in collab.datasets.",
    )
    tokens: tuple[Token, ...] = Field(
        ("user", "target"),
        description="Where the prompt gets a collaborative token: user (one, before the lists), history (after each listed item's name), target (after the target's name); CoLLM's recipe: user and target.",
    )
    recipe: Literal["two_step", "one_step"] = Field(
        "two_step",
        description="two_step (CoLLM's): LoRA on the text prompts first (train), then the projector alone on the prompts with tokens, LoRA frozen (collab.train); one_step: LoRA and projector together on the prompts with tokens (train).",
    )
    mid_times: int = Field(
        10, ge=1, description="The projector's hidden layer is this many times the embedding size wide (CoLLM's 10)."
    )
    train: TrainParams = Field(
        TrainParams(), description="The projector's training in the two-step recipe (CoLLM: lr 1e-3 on ML-1M)."
    )
    sasrec: SasrecParams = Field(default_factory=SasrecParams, description="SASRec's settings.")
    bprmf: BprmfParams = Field(default_factory=BprmfParams, description="BPR-MF's settings.")
    objective: Literal["ranking", "labels"] = Field(
        "labels",
        description="What the encoders learn. labels (CoLLM's): binary cross-entropy of like/dislike (rating above like_threshold) on the training log's rated interactions, MF's logit user . item, SASRec's the encoding of the user's earlier interactions . item, early-stopped on the valid samples' AUC; ranking: BPR-MF's BPR loss and SASRec's next-item loss on the interactions `positives` names, early-stopped on the valid positives' NDCG@10. ML-100K's TALLRec test AUC, seeds 0 and 1: labels BPR-MF 0.746/0.745, SASRec 0.752/0.744; ranking BPR-MF 0.566/0.579, SASRec 0.396/0.388.",
    )
    positives: Literal["all", "liked"] = Field(
        "all",
        description="Objective ranking: the interactions the models learn as a user's items: all, every one (rated or not); liked, only those rated above like_threshold, so that a score tells liked from disliked rather than rated from unrated (ML-100K's TALLRec test, seed 42: BPR-MF's AUC 0.68 against 0.56 with all, SASRec's 0.45 against 0.36). Not read by objective labels.",
    )
    like_threshold: float = Field(
        3,
        description="A rating above this is liked (objective labels' label 1, positives liked's positive); set it to the instructions' like_threshold.",
    )
    cold_below: int = Field(
        10,
        ge=1,
        description="A test sample is cold when its target item has fewer than this many training interactions (0: unseen); warm otherwise.",
    )


Collab = Annotated[
    CollabParams, Field(default_factory=CollabParams, description="CoLLM's collaborative tokens and their encoders.")
]
