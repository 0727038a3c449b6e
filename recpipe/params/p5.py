"""The `p5` section: the P5 task families and their baselines."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from recpipe.params.collab import BprmfParams, SasrecParams
from recpipe.params.core import DatasetName, Strict
from recpipe.params.train import WIDE_LORA, LoraParams, TrainParams

FAMILY_NAMES = ("rating", "sequential", "explanation", "review", "direct")  # recpipe.p5.families.FAMILIES
Family = Literal["rating", "sequential", "explanation", "review", "direct"]


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


P5 = Annotated[P5Params, Field(default_factory=P5Params, description="The P5 task families.")]
