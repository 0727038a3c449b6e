"""`recpipe`: the pipeline's steps outside DVC, plus dataset statistics."""

from __future__ import annotations

from operator import attrgetter
from pathlib import Path

import polars as pl
import typer

import recpipe.steps.baselines
import recpipe.steps.collab
import recpipe.steps.download
import recpipe.steps.evaluate
import recpipe.steps.evaluate_base
import recpipe.steps.families
import recpipe.steps.ingest
import recpipe.steps.instructions
import recpipe.steps.p5_evaluate
import recpipe.steps.p5_report
import recpipe.steps.p5_sample
import recpipe.steps.p5_train
import recpipe.steps.pretrain
import recpipe.steps.report
import recpipe.steps.sample
import recpipe.steps.textualize
import recpipe.steps.train
from recpipe import RecpipeError, __version__, experiments, setup_logging
from recpipe.io import read_parquet
from recpipe.params import schema
from recpipe.params.core import dataset_name
from recpipe.steps.paths import SAMPLES, TABLES

# Every step, in the order `recpipe run` runs them (dvc.yaml's).
STEPS = {
    step.__name__.rpartition(".")[2]: step
    for step in (
        recpipe.steps.download,
        recpipe.steps.ingest,
        recpipe.steps.textualize,
        recpipe.steps.instructions,
        recpipe.steps.sample,
        recpipe.steps.collab,
        recpipe.steps.pretrain,
        recpipe.steps.train,
        recpipe.steps.evaluate_base,
        recpipe.steps.evaluate,
        recpipe.steps.report,
        recpipe.steps.families,
        recpipe.steps.p5_sample,
        recpipe.steps.p5_train,
        recpipe.steps.p5_evaluate,
        recpipe.steps.baselines,
        recpipe.steps.p5_report,
    )
}

app = typer.Typer(
    help="Cached, versioned pipelines for LLM-based recommenders. Each step reads params.yaml and writes under data/.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file to read.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"recpipe {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    del version  # handled, eagerly, by _print_version


DATASET = typer.Option(
    None, "--dataset", "-d", help="Only this dataset (default: every one under `datasets` in params)."
)


def _fail(e: RecpipeError) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(1)


def _load(params_path: Path, dataset: str | None):
    """The params, and the `--dataset` given checked against their datasets."""
    if dataset is not None:
        try:
            dataset_name(dataset)
        except ValueError as e:
            raise RecpipeError(f"--dataset: {e}") from None
    p = schema.load(params_path)
    if dataset is not None and dataset not in p.datasets:
        raise RecpipeError(f"--dataset {dataset!r}: not among the datasets in {params_path}: {list(p.datasets)}")
    return p


def _run(steps: list[str], params_path: Path, dataset: str | None = None, need_p5: bool = False) -> None:
    """Run the steps; need_p5: the P5 steps were asked for, so an empty p5.datasets is an error."""
    setup_logging()
    try:
        p = _load(params_path, dataset)
        if need_p5 and dataset is None and not p.p5.datasets:
            raise RecpipeError(
                f"{params_path}: p5.datasets is empty, so P5 is off: turn it on with "
                f"`dvc exp run -S 'p5.datasets=[{p.dataset}]'` (or set p5.datasets in {params_path}), "
                f"or run one dataset with `recpipe p5 --dataset {p.dataset}`"
            )
        # Each step takes the whole params: they hold every section its own StepParams reads.
        for step in map(STEPS.get, steps):
            if step.FOR_EACH is None:
                step.run(p)
            else:
                for name in [dataset] if dataset else attrgetter(step.FOR_EACH)(p):
                    step.run(p, name)
    except RecpipeError as e:
        raise _fail(e) from None


@app.command()
def download(params_path: Path = PARAMS, dataset: str | None = DATASET) -> None:
    """Fetch each dataset from the first of its sources whose checksum verifies (data/raw/<dataset>)."""
    _run(["download"], params_path, dataset)


@app.command()
def ingest(params_path: Path = PARAMS, dataset: str | None = DATASET) -> None:
    """Read the raw files into validated parquet tables: interactions, items, users (data/tables/<dataset>)."""
    _run(["ingest"], params_path, dataset)


@app.command()
def textualize(params_path: Path = PARAMS, dataset: str | None = DATASET) -> None:
    """Write item, user and history text with entity spans (data/text/<dataset>)."""
    _run(["textualize"], params_path, dataset)


@app.command()
def instructions(params_path: Path = PARAMS) -> None:
    """Build TALLRec Yes/No samples and their leak-free train/valid/test split (data/instructions)."""
    _run(["instructions"], params_path)


@app.command()
def sample(params_path: Path = PARAMS) -> None:
    """Draw the K-shot training set and the validation set with the seed (data/sample)."""
    _run(["sample"], params_path)


@app.command()
def train(params_path: Path = PARAMS) -> None:
    """LoRA-tune the model on the K-shot set; write the adapter (data/adapter) and reports/train.json."""
    _run(["train"], params_path)


@app.command()
def evaluate(params_path: Path = PARAMS) -> None:
    """Score the whole test split with the base model and the tuned adapter: AUC, accuracy (reports/)."""
    _run(["evaluate_base", "evaluate"], params_path)


@app.command()
def report(params_path: Path = PARAMS) -> None:
    """Write reports/report.md with plots: metrics, params and the TALLRec paper's AUCs side by side."""
    _run(["report"], params_path)


@app.command()
def p5(
    params_path: Path = PARAMS,
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Default: every dataset in p5.datasets."),
) -> None:
    """The P5 families: samples, training mixture, one LoRA model, per-family scores on seen and
    unseen templates, popularity and SASRec baselines, and reports/p5/<dataset>/report.md."""
    _run(
        ["families", "p5_sample", "p5_train", "p5_evaluate", "baselines", "p5_report"],
        params_path,
        dataset,
        need_p5=True,
    )


@app.command()
def run(params_path: Path = PARAMS) -> None:
    """Run every step in order, without DVC's caching (use `dvc repro` for that); the P5 steps
    for each dataset in p5.datasets, the pretraining for each in recsysllm.datasets."""
    _run(list(STEPS), params_path)


SWEEP_SET = typer.Option(
    [],
    "--set",
    "-S",
    help="key=value: a param the sweep's `dvc exp run` set beyond seed, sample.k and instructions.split (repeatable).",
)
SWEEP_FROM = typer.Option(
    [],
    "--from",
    help="A saved `dvc exp show --json` to read instead of running it (repeatable: experiments saved on several machines or commits).",
)
SWEEP_OUT = typer.Option("reports", "--out", "-o", help="Where tallrec_sweep.{json,md,png} go.")
FORCE = typer.Option(
    False, "--force", help="Replace the report even if it holds runs (seeds of a row) the new one lacks."
)


@app.command()
def sweep(
    params_path: Path = PARAMS,
    settings: list[str] = SWEEP_SET,
    sources: list[Path] = SWEEP_FROM,
    out: Path = SWEEP_OUT,
    force: bool = FORCE,
) -> None:
    """Aggregate the DVC experiments of a TALLRec sweep over seed, sample.k and instructions.split:
    test AUC mean and sd per K and split, beside the paper's and the history prior's
    (reports/tallrec_sweep.json, .md, .png). Only experiments whose other params equal the params
    file's (with --set) count. A report holding runs the new one lacks is kept, unless --force."""
    setup_logging()
    try:
        from recpipe.tallrec.sweep import write_sweep

        reference = experiments.reference_params(params_path, settings)
        exp = experiments.read_exp_shows(sources) if sources else experiments.exp_show()
        write_sweep(exp, reference, out, force=force)
    except RecpipeError as e:
        raise _fail(e) from None


ABLATION_SET = typer.Option(
    [],
    "--set",
    "-S",
    help="key=value: a param of the full recipe beyond params.yaml's, as its `dvc exp run` set it (repeatable), e.g. train.init=pretrained.",
)
ABLATION_OUT = typer.Option(
    "reports", "--out", "-o", help="Where recsysllm_ablations.{json,md} and recsysllm_lora_rank.png go."
)


@app.command()
def ablations(
    params_path: Path = PARAMS,
    settings: list[str] = ABLATION_SET,
    sources: list[Path] = SWEEP_FROM,
    out: Path = ABLATION_OUT,
    force: bool = FORCE,
) -> None:
    """Aggregate RecSysLLM's ablation (one switch at a time) and LoRA rank experiments against the
    full recipe (the params file with --set): P5 sequential and rating metrics, seen and unseen,
    and TALLRec's AUC, mean ± sd over seeds and the difference from the full recipe
    (reports/recsysllm_ablations.json, .md; recsysllm_lora_rank.png: the metrics against rank).
    A report holding runs the new one lacks is kept, unless --force."""
    setup_logging()
    try:
        from recpipe.ablations import write_ablations

        reference = experiments.reference_params(params_path, settings)
        exp = experiments.read_exp_shows(sources) if sources else experiments.exp_show()
        write_ablations(exp, reference, out, force=force)
    except RecpipeError as e:
        raise _fail(e) from None


@app.command("params")
def params_command() -> None:
    """Print every key of params.yaml and datasets.yaml: dotted name, type, default and description."""
    typer.echo(schema.reference_markdown())


@app.command()
def stats(
    params_path: Path = PARAMS,
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Default: the params' `dataset`."),
) -> None:
    """Print statistics of a dataset's ingested tables and of the instruction splits."""
    try:
        p = _load(params_path, dataset)
        name = dataset or p.dataset
        tables = Path(TABLES) / name
        if not (tables / "interactions.parquet").exists():
            raise RecpipeError(f"{tables} has no tables yet: run `recpipe ingest` or `dvc repro ingest@{name}`")
        inter = read_parquet(tables / "interactions.parquet", "ingest")
        s = read_parquet(SAMPLES, "instructions") if Path(SAMPLES).exists() and name == p.dataset else None
    except RecpipeError as e:
        raise _fail(e) from None
    per_user = inter.group_by("user_id").len()["len"]
    typer.echo(
        f"{name}: interactions: {inter.height:,}  users: {inter['user_id'].n_unique():,}  items: {inter['item_id'].n_unique():,}"
    )
    typer.echo(
        f"density: {inter.height / (inter['user_id'].n_unique() * inter['item_id'].n_unique()):.4f}  "
        f"ratings per user: min {per_user.min()}, median {per_user.median():.0f}, max {per_user.max()}"
    )
    typer.echo(
        "rating distribution: "
        + ", ".join(
            f"{'implicit' if r is None else format(r, 'g')}: {n}"
            for r, n in inter.group_by("rating").len().sort("rating").rows()
        )
    )
    if s is not None:
        by_split = s.group_by("split").agg(
            pl.len(), pl.col("label").mean(), t0=pl.col("timestamp").min(), t1=pl.col("timestamp").max()
        )
        for split, n, pos, t0, t1 in by_split.sort("t0").rows():
            typer.echo(f"{split:>5}: {n:,} samples, {100 * pos:.1f}% liked, timestamps {t0}..{t1}")
