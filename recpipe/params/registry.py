"""datasets.yaml, the dataset registry: where each dataset comes from and how its files read."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from recpipe.params.core import Sha256, Strict, dataset_name

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


def _names(registry):
    # Checked before the entries, on the keys: the error then reads `datasets.yaml: dataset name ...`, not a key path.
    for name in registry if isinstance(registry, dict) else ():
        if isinstance(name, str):
            dataset_name(name)
    return registry


# The registry as the step models hold it: not a key of params.yaml, but read by `load` from datasets.yaml.
Registry = Annotated[
    dict[str, DatasetParams],
    BeforeValidator(_names),
    Field(default_factory=dict, exclude=True, description="The dataset registry: datasets.yaml, read by `load`."),
]
