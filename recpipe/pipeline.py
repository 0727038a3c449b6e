"""The pipeline's steps with their standard paths: used by stages/*.py (under DVC) and the CLI."""

from __future__ import annotations

import os
import sys

from recpipe import RecpipeError, params, setup_logging
from recpipe.io import read_parquet
from recpipe.params import Params

RAW, TABLES, TEXT = "data/raw", "data/tables", "data/text"  # one folder per dataset in each
SAMPLES, SHOTS = "data/instructions/samples.parquet", "data/sample"
CROSS = "data/instructions/cross_domain.parquet"  # evaluate.dataset's samples, when it is set
ADAPTER, EVAL, LIVE = "data/adapter", "data/eval", "dvclive/train"
P5_DATA, P5_REPORTS, P5_LIVE = "data/p5", "reports/p5", "dvclive/p5"  # one folder per dataset in each
RECSYSLLM_DATA, RECSYSLLM_REPORTS, RECSYSLLM_LIVE = (
    "data/recsysllm",
    "reports/recsysllm",
    "dvclive/recsysllm",
)  # likewise
CHECKPOINTS = (
    ".recpipe/checkpoints"  # the P5 and pretraining runs' own folders in it: p5-<dataset>, recsysllm-<dataset>
)

load_params = params.load
dataset_name = params.dataset_name


def dataset_dir(root: str, name: str) -> str:
    """root/name: a dataset's folder in one of the folders above; every such path is made here.
    The name must be a dataset name: with no '/' and no leading '.', root/name is a folder directly
    in root, inside the project, whatever the name (symlinks are left alone: a dataset's folder may
    be a link to shared storage)."""
    try:
        dataset_name(name)
    except ValueError as e:
        raise RecpipeError(str(e)) from None
    return f"{root}/{name}"


def params_reference() -> str:
    """Every key of params.yaml and datasets.yaml with its type, default and description (markdown)."""
    return params.reference_markdown()


def sweep(params_path, settings: list[str], exp_json=(), out_dir="reports", force: bool = False) -> None:
    """Aggregate the DVC experiments of a TALLRec sweep (`dvc exp show --json`, or saved copies
    of it) whose params equal params_path's with `settings` (key=value): reports/tallrec_sweep.*,
    replacing one with runs this one lacks only with `force`."""
    from recpipe import experiments
    from recpipe.tallrec import sweep as _sweep

    reference = experiments.reference_params(params_path, settings)
    exp = experiments.read_exp_shows(exp_json) if exp_json else experiments.exp_show()
    _sweep.write_sweep(exp, reference, out_dir, force=force)


def ablations(params_path, settings: list[str], exp_json=(), out_dir="reports", force: bool = False) -> None:
    """Aggregate RecSysLLM's ablation and LoRA rank experiments (`dvc exp show --json`, or saved
    copies) against the full recipe, params_path's params with `settings` (key=value):
    reports/recsysllm_ablations.{json,md} and recsysllm_lora_rank.png (over a report with runs
    this one lacks only with `force`)."""
    from recpipe import ablations as _ablations
    from recpipe import experiments

    reference = experiments.reference_params(params_path, settings)
    exp = experiments.read_exp_shows(exp_json) if exp_json else experiments.exp_show()
    _ablations.write_ablations(exp, reference, out_dir, force=force)


def download(p: Params, dataset: str) -> None:
    from recpipe.data.download import download as _download

    _download(dataset, p.registry[dataset], dataset_dir(RAW, dataset))


def ingest(p: Params, dataset: str) -> None:
    from recpipe.data.ingest import ingest as _ingest

    _ingest(dataset_dir(RAW, dataset), dataset_dir(TABLES, dataset), p.registry[dataset])


def textualize(p: Params, dataset: str) -> None:
    from recpipe.data.textualize import textualize as _textualize

    template = p.registry[dataset].template or dataset
    _textualize(
        dataset_dir(TABLES, dataset),
        dataset_dir(TEXT, dataset),
        template=template,
        move_article=p.textualize.article_first,
    )


def instructions(p: Params) -> None:
    """The samples of `dataset`; with evaluate.dataset set, that dataset's too, built by the same code."""
    from pathlib import Path

    from recpipe.tallrec.instructions import same_answers, write_instructions

    write_instructions(dataset_dir(TEXT, p.dataset), SAMPLES, p.instructions)  # streamed: nothing read back
    if p.evaluate.dataset is None:
        Path(CROSS).unlink(missing_ok=True)  # left by an earlier cross-domain run outside DVC
        return
    name, params = p.scored()
    same_answers(p.instructions.template, params.template)
    write_instructions(dataset_dir(TEXT, name), CROSS, params)


def test_samples(p: Params) -> str:
    """The samples file whose test split the evaluate and report steps read."""
    return SAMPLES if p.evaluate.dataset is None else CROSS


def sample(p: Params) -> None:
    from recpipe.tallrec.sample import sample as _sample

    _sample(SAMPLES, SHOTS, p.sample, p.seed)


def train(p: Params) -> None:
    from recpipe.model.train import answer_task
    from recpipe.model.train import train as _train
    from recpipe.tallrec.evaluate import valid_auc

    positions = intra_positions(p, p.train.init, p.dataset)
    validate = valid_auc(p.instructions.template, p.train.eval_batch_size, positions)
    _train(
        f"{SHOTS}/train.parquet",
        f"{SHOTS}/valid.parquet",
        ADAPTER,
        "reports/train.json",
        p.model,
        p.lora,
        p.train,
        p.seed,
        live_dir=LIVE,
        validate=validate,
        run_path="reports/train_run.json",
        init=start(p.train.init, p.dataset),
        task=answer_task(f"{SHOTS}/train.parquet", f"{SHOTS}/valid.parquet", p.train.max_length, positions),
    )


def start(init: str, dataset: str):
    """train's `init` for train.init / p5.train.init: None (the base model), or the dataset's
    pretrained model (recsysllm.pretrain.Pretrained)."""
    if init == "base":
        return None
    from recpipe.recsysllm.pretrain import Pretrained

    return Pretrained(f"{dataset_dir(RECSYSLLM_DATA, dataset)}/pretrained")


def intra_positions(p: Params, init: str, dataset: str):
    """(model, tokenizer) -> intra positions for a model fine-tuned from `init`, or None (plain):
    recsysllm.dynamic_positions on a pretraining with 2D positions (recpipe.recsysllm.positions)."""
    if not p.intra_positions(init):
        return None
    from recpipe.recsysllm.positions import EntityPositions

    return EntityPositions(f"{dataset_dir(RECSYSLLM_DATA, dataset)}/corpus.parquet")


def with_positions(positions, model, tokenizer):
    """intra_positions' factory applied to a loaded model, or None."""
    return positions(model, tokenizer) if positions is not None else None


def scoring_model(p: Params, adapter: str | None = None, init=None):
    """(model, tokenizer) to score with: the base model in evaluate.dtype on model.device (with
    the pretraining merged in first when `init`, start()'s, is given), with `adapter` merged into
    its weights if given (plain weights: faster to score). A device this machine lacks fails
    before anything is loaded."""
    from recpipe.model.attention import pick_attention
    from recpipe.model.load import load, pick_device, pick_dtype

    device = pick_device(p.model.device)
    model, tokenizer = load(
        p.model.name,
        p.model.sha256,
        dtype=pick_dtype(p.evaluate.dtype, device),
        attention=pick_attention(p.model.attention, device),
    )
    model = model.to(device)  # before the adapter: it is loaded and merged on the same device
    if init is not None:
        model = init(model, tokenizer).to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload().to(device)
    return model.eval(), tokenizer


def evaluate(p: Params) -> None:
    """Score the test split with the tuned adapter (on the pretrained model with train.init pretrained)."""
    model, tokenizer = scoring_model(p, ADAPTER, start(p.train.init, p.dataset))
    score_test(
        p, "tuned", model, tokenizer, with_positions(intra_positions(p, p.train.init, p.dataset), model, tokenizer)
    )


def evaluate_base(p: Params) -> None:
    """Score the test split with the untouched base model."""
    score_test(p, "base", *scoring_model(p))


def score_test(p: Params, name: str, model, tokenizer, positions=None) -> None:
    from recpipe.tallrec.evaluate import evaluate as _evaluate

    # Scored with the training template's answer words, the ones the adapter learned (the
    # instructions step checks that evaluate.instructions' template has the same).
    _evaluate(
        test_samples(p),
        f"{EVAL}/{name}",
        f"reports/{name}.json",
        f"reports/roc_{name}.csv",
        model,
        tokenizer,
        p.evaluate.batch_size,
        p.instructions.template,
        positions,
    )


def report(p: Params) -> None:
    from recpipe.tallrec.report import report as _report

    _report("reports", LIVE, "reports/report.md", p, EVAL, test_samples(p), dataset_dir(TABLES, p.scored()[0]))


# The P5 task families (opt-in: one set of stages per dataset in p5.datasets).


def families(p: Params, dataset: str) -> None:
    from recpipe.p5.families import families as _families
    from recpipe.p5.indexing import item_names

    items = read_parquet(f"{dataset_dir(TEXT, dataset)}/items.parquet", "textualize")
    interactions = read_parquet(f"{dataset_dir(TABLES, dataset)}/interactions.parquet", "ingest")
    names = item_names(items, interactions, p.p5.indexing, p.seed, p.p5.clusters)
    rating_max = p.registry[dataset].rating_max
    _families(
        dataset_dir(TABLES, dataset),
        dataset_dir(TEXT, dataset),
        f"{dataset_dir(P5_DATA, dataset)}/families",
        dataset,
        p.p5,
        p.seed,
        rating_max,
        names,
    )


def p5_sample(p: Params, dataset: str) -> None:
    from recpipe.p5.sample import p5_sample as _p5_sample

    _p5_sample(f"{dataset_dir(P5_DATA, dataset)}/families", f"{dataset_dir(P5_DATA, dataset)}/shots", p.p5, p.seed)


def p5_train(p: Params, dataset: str) -> None:
    from recpipe.model.train import answer_task
    from recpipe.model.train import train as _train

    shots = f"{dataset_dir(P5_DATA, dataset)}/shots"
    positions = intra_positions(p, p.p5.train.init, dataset)
    _train(
        f"{shots}/train.parquet",
        f"{shots}/valid.parquet",
        f"{dataset_dir(P5_DATA, dataset)}/adapter",
        f"{dataset_dir(P5_REPORTS, dataset)}/train.json",
        p.model,
        p.p5.lora,
        p.p5.train,
        p.seed,
        live_dir=dataset_dir(P5_LIVE, dataset),
        run_path=f"{dataset_dir(P5_REPORTS, dataset)}/train_run.json",
        checkpoints=dataset_dir(CHECKPOINTS, f"p5-{dataset}"),
        init=start(p.p5.train.init, dataset),
        task=answer_task(f"{shots}/train.parquet", f"{shots}/valid.parquet", p.p5.train.max_length, positions),
    )


def p5_evaluate(p: Params, dataset: str) -> None:
    from recpipe.p5.evaluate import evaluate_p5

    model, tokenizer = scoring_model(p, f"{dataset_dir(P5_DATA, dataset)}/adapter", start(p.p5.train.init, dataset))
    d = p.registry[dataset]
    evaluate_p5(
        f"{dataset_dir(P5_DATA, dataset)}/shots/{p.p5.evaluate_split}.parquet",
        f"{dataset_dir(P5_DATA, dataset)}/families/names.parquet",
        f"{dataset_dir(TABLES, dataset)}/interactions.parquet",
        f"{dataset_dir(P5_DATA, dataset)}/eval",
        f"{dataset_dir(P5_REPORTS, dataset)}/families",
        model,
        tokenizer,
        p.p5,
        (d.rating_min, d.rating_max),
        with_positions(intra_positions(p, p.p5.train.init, dataset), model, tokenizer),
    )


def baselines(p: Params, dataset: str) -> None:
    import polars as pl

    from recpipe.io import atomic_dir, write_json, write_parquet
    from recpipe.p5.baselines import baselines as _baselines

    interactions = read_parquet(f"{dataset_dir(TABLES, dataset)}/interactions.parquet", "ingest")
    test = read_parquet(f"{dataset_dir(P5_DATA, dataset)}/shots/test.parquet", "p5_sample")
    asked = set(test.filter(pl.col("family") == "sequential")["user_id"].to_list()) or None
    metrics, cases = _baselines(interactions, test, p.p5.sasrec, p.seed, sequential_users=asked, bprmf=p.p5.bprmf)
    with atomic_dir(f"{dataset_dir(P5_DATA, dataset)}/baselines") as tmp:
        write_parquet(cases, tmp / "predictions.parquet")
    write_json(metrics, f"{dataset_dir(P5_REPORTS, dataset)}/baselines.json")


def p5_report(p: Params, dataset: str) -> None:
    from recpipe.p5.report import write_p5_report

    summary = {"dataset": dataset, "seed": p.seed, "model": p.model.name, "p5": p.p5.model_dump(exclude={"datasets"})}
    out = dataset_dir(P5_REPORTS, dataset)
    test = p.p5.evaluate_split == "test"  # the baselines score the test cases: nothing to set beside validation figures
    predictions = {
        "recpipe": f"{dataset_dir(P5_DATA, dataset)}/eval/predictions.parquet",
        "baselines": f"{dataset_dir(P5_DATA, dataset)}/baselines/predictions.parquet",
    }
    write_p5_report(
        dataset,
        f"{out}/families",
        f"{out}/baselines.json" if test else None,
        f"{out}/report.md",
        summary,
        predictions if test else None,
        p.p5.indexing,
        p.p5.evaluate_split,
    )


# RecSysLLM's masked pretraining (opt-in: one stage per dataset in recsysllm.datasets).


def held_out(p: Params, dataset: str):
    """Every (user_id, item_id) a task validates or tests on in `dataset`: any P5 family's valid and
    test pools, TALLRec's valid and test samples when TALLRec trains on this dataset, and its
    cross-domain test samples when it is evaluate.dataset."""
    import polars as pl

    from recpipe.p5.families import asked_pairs

    pairs = [asked_pairs(read_parquet(f"{dataset_dir(TABLES, dataset)}/interactions.parquet", "ingest"))]
    tallrec = [SAMPLES] if dataset == p.dataset else []
    if p.evaluate.dataset is not None and dataset == p.evaluate.dataset and dataset != p.dataset:
        tallrec.append(CROSS)
    for path in tallrec:
        pairs.append(read_parquet(path, "instructions").filter(pl.col("split") != "train").select("user_id", "item_id"))
    return pl.concat(pairs).unique().sort("user_id", "item_id")


def pretrain(p: Params, dataset: str) -> None:
    from recpipe.recsysllm.pretrain import pretrain as _pretrain

    out = dataset_dir(RECSYSLLM_DATA, dataset)
    _pretrain(
        dataset_dir(TEXT, dataset),
        held_out(p, dataset),
        f"{out}/corpus.parquet",
        f"{out}/pretrained",
        f"{dataset_dir(RECSYSLLM_REPORTS, dataset)}/pretrain.json",
        p.model,
        p.recsysllm,
        p.seed,
        live_dir=dataset_dir(RECSYSLLM_LIVE, dataset),
        checkpoints=dataset_dir(CHECKPOINTS, f"recsysllm-{dataset}"),
        run_path=f"{dataset_dir(RECSYSLLM_REPORTS, dataset)}/pretrain_run.json",
    )


STEPS = {
    "download": download,
    "ingest": ingest,
    "textualize": textualize,
    "instructions": instructions,
    "sample": sample,
    "pretrain": pretrain,
    "train": train,
    "evaluate_base": evaluate_base,
    "evaluate": evaluate,
    "report": report,
    "families": families,
    "p5_sample": p5_sample,
    "p5_train": p5_train,
    "p5_evaluate": p5_evaluate,
    "baselines": baselines,
    "p5_report": p5_report,
}


# dvc.yaml runs these once per dataset (foreach over `datasets`, `p5.datasets` or `recsysllm.datasets`).
PER_DATASET = {"download", "ingest", "textualize"}
PER_P5_DATASET = {"families", "p5_sample", "p5_train", "p5_evaluate", "baselines", "p5_report"}
PER_RECSYSLLM_DATASET = {"pretrain"}


def main(step: str) -> None:
    """Run one step as a DVC stage: bad input ends it with one line on stderr and exit code 1.
    Per-dataset steps take the dataset's name as their one argument or, under DVC, from the
    stage's name in DVC_STAGE (`download@ml-100k`), so that dvc.yaml passes no name through a shell."""
    setup_logging()
    try:
        p = params.load()
        if step in PER_DATASET | PER_P5_DATASET | PER_RECSYSLLM_DATASET:
            allowed, where = (
                (p.datasets, "datasets")
                if step in PER_DATASET
                else (p.p5.datasets, "p5.datasets")
                if step in PER_P5_DATASET
                else (p.recsysllm.datasets, "recsysllm.datasets")
            )
            args = sys.argv[1:] or [os.environ.get("DVC_STAGE", "").partition("@")[2]]
            if len(args) != 1 or args[0] not in allowed:
                raise RecpipeError(f"usage: {step}.py <dataset>, one of {where}: {list(allowed)}")
            STEPS[step](p, args[0])
        else:
            STEPS[step](p)
    except RecpipeError as e:
        print(f"error: {step}: {e}", file=sys.stderr)
        sys.exit(1)
