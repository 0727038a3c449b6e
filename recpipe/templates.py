"""Prompt and text templates are YAML data files; this module loads and fills them."""

from __future__ import annotations

import string
from pathlib import Path

from recpipe import RecpipeError
from recpipe.io import read_mapping

TEMPLATE_DIR = Path(__file__).parent / "templates"


# The marker of a collaborative token in a prompt (CoLLM's): the model's input embedding at it is
# a projected user or item embedding (recpipe.model.collab). Plain text no item title contains.
COLLAB_TOKEN = "<|collab|>"
# Where a hybrid prompt's user token goes: first in its input.
COLLAB_USER = f"User: {COLLAB_TOKEN}\n"


def read_template_file(name_or_path: str) -> tuple[Path, dict]:
    """recpipe/templates/<name>.yaml, or a path to a YAML file: its path and contents."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TEMPLATE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise RecpipeError(f"template {name_or_path!r} not found (looked for {path})")
    return path, read_mapping(path)


def load_template(
    name_or_path: str, required: dict[str, set[str] | None], allowed: dict[str, set[str]] | None = None
) -> dict:
    """Load a template file; check each required key has its placeholders, plain ones only (and
    only those `allowed` names for the key, where it names the key). A key required as None is
    literal text, not a template."""
    path, data = read_template_file(name_or_path)
    for key, fields in required.items():
        if key not in data:
            raise RecpipeError(f"{path}: missing key {key!r}")
        if fields is None:
            continue
        for alternative in data[key] if isinstance(data[key], list) else [data[key]]:
            found = placeholders(alternative, f"{path}: {key!r}")
            if not fields <= found:
                raise RecpipeError(f"{path}: {key!r} lacks placeholders {sorted(fields - found)}")
            unknown = found - allowed[key] if allowed and key in allowed else set()
            if unknown:
                raise RecpipeError(
                    f"{path}: {key!r} has unknown placeholders {sorted(unknown)} (it can use {sorted(allowed[key])})"
                )
    return data


def placeholders(template: str, where: str = "template") -> set[str]:
    """The fields of a template, each a plain name such as {title}. str.format would evaluate more
    ({item.__class__}, {liked[0]}, {target!r}, {rating:>3}) and could print interpreter internals
    into a prompt: anything but a plain name, or a stray brace, is an error naming `where`."""
    if not isinstance(template, str):
        raise RecpipeError(f"{where}: expected text, got {type(template).__name__}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:  # a lone { or }: Python's words for it can point at the wrong one
        raise RecpipeError(
            f"{where}: a {{ or }} that opens or closes no placeholder (write {{{{ or }}}} for a literal brace)"
        ) from None
    fields = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            written = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise RecpipeError(
                f"{where}: placeholder {written} is not a plain name such as {{title}} (no attribute, index, conversion or format spec)"
            )
        fields.add(field)
    return fields


def render(template: str, fields: dict[str, str | list[str]], sep: str = ", ") -> tuple[str, list[dict]]:
    """Fill a template and return the text with the character span of every entity placed in it."""
    text, spans = [], []
    pos = 0
    for literal, field, _, _ in string.Formatter().parse(template):
        text.append(literal)
        pos += len(literal)
        if field is None:
            continue
        if field not in fields:
            raise RecpipeError(f"template placeholder {{{field}}} has no value")
        value = fields[field]
        parts = value if isinstance(value, list) else [value]
        for i, part in enumerate(parts):
            if i:
                text.append(sep)
                pos += len(sep)
            spans.append({"entity": field, "start": pos, "end": pos + len(part)})
            text.append(part)
            pos += len(part)
    return "".join(text), spans


# How a P5 answer meets its prompt: the prompt ends without a space and the answer is written after
# one, as a word follows the one before it in running text. A byte-level BPE tokenizer (SmolLM2's,
# GPT-2's) writes " Toy Story" as ĠToy ĠStory but "Toy Story" as T oy ĠStory; with the space on the
# answer's side, an item name is the same tokens everywhere: as a training target, in the decoding
# trie, in likelihood scoring, and inside a prompt's item lists, where each name follows a space and
# is followed by whitespace (LIST_SEPARATOR), so no token of it fuses with the text around it
# (SmolLM2 has single tokens for "),", ")." and ");"). recpipe.p5.families.load_templates checks
# the templates keep to this.
ANSWER_SPACE = " "
LIST_SEPARATOR = " | "


def in_text(answer: str) -> str:
    """An answer (an item name, a rating, yes/no, a sentence) as it follows its prompt: after one space."""
    return ANSWER_SPACE + answer
