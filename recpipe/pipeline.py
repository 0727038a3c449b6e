"""The pipeline's steps with their standard paths: used by stages/*.py (under DVC) and the CLI."""

from __future__ import annotations

from recpipe.download import download as _download
from recpipe.ingest import ingest as _ingest
from recpipe.instructions import instructions as _instructions
from recpipe.params import Params
from recpipe.sample import sample as _sample
from recpipe.textualize import textualize as _textualize

RAW, TABLES, TEXT = "data/raw", "data/tables", "data/text"
SAMPLES, SHOTS = "data/instructions/samples.parquet", "data/sample"


def download(p: Params) -> None:
    _download(p.dataset, p.download.datasets[p.dataset], RAW)


def ingest(p: Params) -> None:
    dataset = p.download.datasets[p.dataset]
    _ingest(RAW, TABLES, dataset.rating_min, dataset.rating_max)


def textualize(p: Params) -> None:
    _textualize(TABLES, TEXT, template=p.dataset, move_article=p.textualize.article_first)


def instructions(p: Params) -> None:
    _instructions(TEXT, SAMPLES, p.instructions)


def sample(p: Params) -> None:
    _sample(SAMPLES, SHOTS, p.sample, p.seed)


STEPS = {"download": download, "ingest": ingest, "textualize": textualize, "instructions": instructions, "sample": sample}
