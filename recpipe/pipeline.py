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

RAW, TABLES, TEXT = "data/raw", "data/tables", "data/text"  # one folder per dataset in each
SAMPLES, SHOTS = "data/instructions/samples.parquet", "data/sample"
ADAPTER, EVAL, LIVE = "data/adapter", "data/eval", "dvclive/train"


def download(p: Params, dataset: str) -> None:
    _download(dataset, p.download.datasets[dataset], f"{RAW}/{dataset}")


def ingest(p: Params, dataset: str) -> None:
    _ingest(f"{RAW}/{dataset}", f"{TABLES}/{dataset}", p.download.datasets[dataset])


def textualize(p: Params, dataset: str) -> None:
    template = p.download.datasets[dataset].template or dataset
    _textualize(f"{TABLES}/{dataset}", f"{TEXT}/{dataset}", template=template, move_article=p.textualize.article_first)


def instructions(p: Params) -> None:
    _instructions(f"{TEXT}/{p.dataset}", SAMPLES, p.instructions)


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

        model = PeftModel.from_pretrained(model, ADAPTER).merge_and_unload()  # plain weights: faster to score
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


PER_DATASET = {"download", "ingest", "textualize"}  # dvc.yaml runs these once per dataset (foreach)


def main(step: str) -> None:
    """Run one step as a DVC stage: bad input ends it with one line on stderr and exit code 1.
    Per-dataset steps take the dataset's name as their one argument."""
    setup_logging()
    try:
        p = params.load()
        if step in PER_DATASET:
            if len(sys.argv) != 2 or sys.argv[1] not in p.datasets:
                raise RecpipeError(f"usage: {step}.py <dataset>, one of datasets: {list(p.datasets)}")
            STEPS[step](p, sys.argv[1])
        else:
            STEPS[step](p)
    except RecpipeError as e:
        print(f"error: {step}: {e}", file=sys.stderr)
        sys.exit(1)
