"""The whole params file: every section in one model (`Params`), for the CLI, experiments' `-S`
checks and `recpipe params`, which documents every key. The stages read only their own sections
(recpipe/steps/), with the same section models."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel

from recpipe.params import core
from recpipe.params.collab import Collab
from recpipe.params.core import DATASETS_FILE, PARAMS_FILE, Common
from recpipe.params.evaluate import Evaluate
from recpipe.params.instructions import Instructions
from recpipe.params.model import Model
from recpipe.params.p5 import P5
from recpipe.params.recsysllm import Recsysllm
from recpipe.params.registry import DatasetParams, Registry
from recpipe.params.sample import Sample
from recpipe.params.textualize import Textualize
from recpipe.params.train import Lora, Train


class Params(Common):
    """Everything in params.yaml, plus the dataset registry read from datasets.yaml (`registry`)."""

    textualize: Textualize
    instructions: Instructions
    sample: Sample
    model: Model
    lora: Lora
    train: Train
    evaluate: Evaluate
    p5: P5
    recsysllm: Recsysllm
    collab: Collab
    registry: Registry


def parse(data: dict, where: str = PARAMS_FILE, datasets_where: str = DATASETS_FILE) -> Params:
    """Params from a mapping: params.yaml's keys, with the dataset registry under `registry`."""
    return core.parse(Params, data, where, datasets_where)


def load(path: str | Path = PARAMS_FILE, datasets_path: str | Path | None = None) -> Params:
    """params.yaml and the dataset registry, datasets.yaml (by default the one next to params.yaml)."""
    return core.load(Params, path, datasets_path)


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
        sub = core.models_in(field.annotation)
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
