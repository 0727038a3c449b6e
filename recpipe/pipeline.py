"""The pipeline's steps with their standard paths: used by stages/*.py (under DVC) and the CLI."""

from __future__ import annotations

import sys

from recpipe import RecpipeError, params, setup_logging
from recpipe.download import download as _download
from recpipe.ingest import ingest as _ingest
from recpipe.instructions import instructions as _instructions
from recpipe.params import Params
from recpipe.sample import sample as _sample
from recpipe.textualize import textualize as _textualize

RAW, TABLES, TEXT = "data/raw", "data/tables", "data/text"
SAMPLES, SHOTS = "data/instructions/samples.parquet", "data/sample"
ADAPTER, EVAL, LIVE = "data/adapter", "data/eval", "dvclive/train"


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


def _model(p: Params):
    if p.model is None:
        raise RecpipeError("params.yaml: model: missing section (model.name is needed to train or evaluate)")
    return p.model


def train(p: Params) -> None:
    from recpipe.train import train as _train

    _train(f"{SHOTS}/train.parquet", f"{SHOTS}/valid.parquet", ADAPTER, "reports/train.json", _model(p), p.lora, p.train, p.seed, live_dir=LIVE, template=p.instructions.template)


def evaluate(p: Params, tuned: bool = True) -> None:
    """Score the test split with the tuned adapter, or (tuned=False) with the untouched base model."""
    from recpipe.evaluate import evaluate as _evaluate
    from recpipe.model import load
    from recpipe.train import pick_dtype

    model, tokenizer = load(_model(p).name, _model(p).sha256, dtype=pick_dtype(p.evaluate.dtype))
    if tuned:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ADAPTER)
    name = "tuned" if tuned else "base"
    _evaluate(SAMPLES, f"{EVAL}/{name}", f"reports/{name}.json", f"reports/roc_{name}.csv", model, tokenizer, p.evaluate.batch_size, p.instructions.template)


def evaluate_base(p: Params) -> None:
    evaluate(p, tuned=False)


def report(p: Params) -> None:
    from recpipe.report import report as _report

    _report("reports", LIVE, "reports/report.md", p)


STEPS = {
    "download": download, "ingest": ingest, "textualize": textualize, "instructions": instructions,
    "sample": sample, "train": train, "evaluate_base": evaluate_base, "evaluate": evaluate, "report": report,
}  # fmt: skip


def main(step: str) -> None:
    """Run one step as a DVC stage: bad input ends it with one line on stderr and exit code 1."""
    setup_logging()
    try:
        STEPS[step](params.load())
    except RecpipeError as e:
        print(f"error: {step}: {e}", file=sys.stderr)
        sys.exit(1)
