"""pretrain@<dataset>: RecSysLLM's masked pretraining on a dataset's texts, every validated or
tested pair held out (data/recsysllm/<dataset>)."""

from recpipe.params.core import Common
from recpipe.params.evaluate import Evaluate
from recpipe.params.model import Model
from recpipe.params.recsysllm import Recsysllm
from recpipe.steps.paths import (
    CHECKPOINTS,
    CROSS,
    RECSYSLLM_DATA,
    RECSYSLLM_LIVE,
    RECSYSLLM_REPORTS,
    SAMPLES,
    TABLES,
    TEXT,
    dataset_dir,
)

FOR_EACH = "recsysllm.datasets"


class StepParams(Common):
    model: Model
    evaluate: Evaluate  # its dataset: whose cross-domain test samples are held out
    recsysllm: Recsysllm


def held_out(p: StepParams, dataset: str):
    """Every (user_id, item_id) a task validates or tests on in `dataset`: any P5 family's valid and
    test pools, TALLRec's valid and test samples when TALLRec trains on this dataset, and its
    cross-domain test samples when it is evaluate.dataset."""
    import polars as pl

    from recpipe.io import read_parquet
    from recpipe.p5.families import asked_pairs

    pairs = [asked_pairs(read_parquet(f"{dataset_dir(TABLES, dataset)}/interactions.parquet", "ingest"))]
    tallrec = [SAMPLES] if dataset == p.dataset else []
    if p.evaluate.dataset is not None and dataset == p.evaluate.dataset and dataset != p.dataset:
        tallrec.append(CROSS)
    for path in tallrec:
        pairs.append(read_parquet(path, "instructions").filter(pl.col("split") != "train").select("user_id", "item_id"))
    return pl.concat(pairs).unique().sort("user_id", "item_id")


def run(p: StepParams, dataset: str) -> None:
    from recpipe.recsysllm.pretrain import pretrain

    out, reports = dataset_dir(RECSYSLLM_DATA, dataset), dataset_dir(RECSYSLLM_REPORTS, dataset)
    pretrain(
        dataset_dir(TEXT, dataset),
        held_out(p, dataset),
        f"{out}/corpus.parquet",
        f"{out}/pretrained",
        f"{reports}/pretrain.json",
        p.model,
        p.recsysllm,
        p.seed,
        live_dir=dataset_dir(RECSYSLLM_LIVE, dataset),
        checkpoints=dataset_dir(CHECKPOINTS, f"recsysllm-{dataset}"),
        run_path=f"{reports}/pretrain_run.json",
    )
