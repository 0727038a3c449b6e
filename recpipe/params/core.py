"""What every params model shares: strict models, checksums, dataset names, the top-level keys
(seed, datasets, dataset) and the loader.

params.yaml has one section per part of the pipeline, each modelled in a module of its own
(recpipe/params/<section>.py). A stage validates only the sections it reads (its step model, in
recpipe/steps/), so that editing one section's model reruns only the stages that read it;
recpipe.params.schema puts all of them together for the CLI and `recpipe params`. The models are
the one source of every default: params.yaml renders them (a test checks the two agree)."""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from recpipe import RecpipeError
from recpipe.io import read_mapping

PARAMS_FILE, DATASETS_FILE = "params.yaml", "datasets.yaml"
REGISTRY = "registry"  # the field of a step model that holds datasets.yaml
# params.yaml's keys, in its order; recpipe.params.schema.Params has a field for each (a test checks).
TOP_LEVEL = (
    "seed",
    "datasets",
    "dataset",
    "textualize",
    "instructions",
    "sample",
    "model",
    "lora",
    "train",
    "evaluate",
    "p5",
    "recsysllm",
    "collab",
)


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


class Common(Strict):
    """The top-level keys every step reads, and the checks between sections: each runs when the
    step's model holds the sections it involves (a step model subclasses this one)."""

    seed: int = Field(0, description="The seed of every random draw: samples, splits, negatives, weight init.")
    datasets: tuple[DatasetName, ...] = Field(
        ("ml-100k",),
        description="The datasets the data stages (download, ingest, textualize) prepare, each an entry of datasets.yaml and cached on its own.",
    )
    dataset: DatasetName = Field(
        "ml-100k", description="The dataset the TALLRec instructions, training and evaluation use (one of `datasets`)."
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Common:
        where = (info.context or {}).get("datasets_file", DATASETS_FILE)
        evaluate, p5, recsysllm, collab = (getattr(self, k, None) for k in ("evaluate", "p5", "recsysllm", "collab"))
        used = [self.dataset]
        used += [evaluate.dataset] if evaluate is not None and evaluate.dataset is not None else []
        used += list(p5.datasets) if p5 is not None else []
        used += list(recsysllm.datasets) if recsysllm is not None else []
        used += list(collab.datasets) if collab is not None else []
        registry = getattr(self, REGISTRY, None)
        for name in (*self.datasets, *used) if registry is not None else ():
            if name not in registry:
                raise ValueError(f"dataset {name!r} has no entry in {where} ({sorted(registry)})")
        for name in used:
            if name not in self.datasets:
                raise ValueError(f"dataset {name!r} is not among the prepared datasets {list(self.datasets)}")
        if evaluate is not None and evaluate.dataset == self.dataset and evaluate.instructions is not None:
            # Split another way, the training dataset's "test" samples could be training samples.
            raise ValueError(
                f"evaluate.instructions: evaluate.dataset is the training dataset {self.dataset!r}, whose test split is the one `instructions` made"
            )
        if collab is not None and collab.model != "none":
            if self.dataset not in collab.datasets:
                raise ValueError(
                    f"collab.model {collab.model}: dataset {self.dataset!r} has no collaborative encoders (add it to collab.datasets {list(collab.datasets)})"
                )
            if evaluate is not None and evaluate.dataset is not None:
                raise ValueError(
                    "collab.model: cross-domain scoring (evaluate.dataset) with collaborative tokens is not supported"
                )
        if recsysllm is not None:
            train = getattr(self, "train", None)
            for key, init, names in (
                ("train.init", train.init if train is not None else "base", [self.dataset]),
                ("p5.train.init", p5.train.init if p5 is not None else "base", p5.datasets if p5 is not None else ()),
            ):
                for name in names if init == "pretrained" else []:
                    if name not in recsysllm.datasets:
                        raise ValueError(
                            f"{key} pretrained: dataset {name!r} has no pretraining (add it to recsysllm.datasets {list(recsysllm.datasets)})"
                        )
        return self


def models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold: itself, or inside Optional, Annotated, list or dict values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is dict:
        args = args[1:]
    return [m for a in args for m in models_in(a)]


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed where a pydantic error location in `model` points, for did-you-mean hints."""
    current: list = [model]  # models or container annotations that the path so far can be in
    for part in loc[:-1]:
        nxt = []
        for item in current:
            if isinstance(item, type) and issubclass(item, BaseModel):
                if part in item.model_fields:
                    nxt.append(item.model_fields[part].annotation)
            else:  # a list index or dict key steps into the container's values
                nxt += models_in(item)
        current = nxt
    models = [m for item in current for m in models_in(item)]
    if len(loc) == 1 and models and models[0] is model:
        return list(TOP_LEVEL)
    return list(models[0].model_fields) if models else []


MOVED = {
    "download": f"the dataset registry is {DATASETS_FILE}, next to {PARAMS_FILE}",
    "p5.item_ids": "replaced by p5.indexing: names for false, random for true",
}

M = TypeVar("M", bound=Common)


def _problem(model: type[BaseModel], err: dict, where: str, datasets_where: str) -> str:
    """One pydantic error as `file: dotted.key: message`."""
    loc, file = err["loc"], where
    if loc and loc[0] == REGISTRY:
        loc, file = loc[1:], datasets_where
    key = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(err["loc"][-1]), _known_keys(model, err["loc"]), n=1)
        if key in MOVED and file == where:
            msg = f"unknown key ({MOVED[key]})"
        else:
            msg = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    else:
        msg = err["msg"].removeprefix("Value error, ")
    return f"{file}: {key}: {msg}" if key else f"{file}: {msg}"


def parse(model: type[M], data: dict, where: str = PARAMS_FILE, datasets_where: str = DATASETS_FILE) -> M:
    """`model` from a mapping of params.yaml's keys (with the dataset registry under `registry`):
    only the keys the model holds are validated, and a top-level key params.yaml does not have is
    an error. An error names the file (`where` or, for the registry, `datasets_where`) and the key."""
    problems = [
        _problem(model, {"loc": (key,), "type": "extra_forbidden"}, where, datasets_where)
        for key in data
        if key not in (*TOP_LEVEL, REGISTRY)
    ]
    try:
        valid = model.model_validate(
            {k: v for k, v in data.items() if k in model.model_fields}, context={"datasets_file": datasets_where}
        )
    except ValidationError as e:
        problems += [_problem(model, err, where, datasets_where) for err in e.errors()]
    if problems:
        raise RecpipeError("; ".join(problems))
    return valid


def _read_yaml(path: Path, what: str) -> dict:
    """The file's mapping. An empty file is an error too: running on the defaults would hide that
    the params were lost."""
    if not path.exists():
        raise RecpipeError(f"{path}: {what} file not found")
    return read_mapping(path)


def load(model: type[M], path: str | Path = PARAMS_FILE, datasets_path: str | Path | None = None) -> M:
    """`model` read from params.yaml and, if it holds the registry, datasets.yaml (by default the
    one next to params.yaml)."""
    path = Path(path)
    datasets_path = path.parent / DATASETS_FILE if datasets_path is None else Path(datasets_path)
    data = _read_yaml(path, "params")
    if REGISTRY in data:
        raise RecpipeError(f"{path}: {REGISTRY}: unknown key (the dataset registry is read from {datasets_path})")
    if REGISTRY in model.model_fields:
        data = {**data, REGISTRY: _read_yaml(datasets_path, "dataset registry")}
    return parse(model, data, str(path), str(datasets_path))
