"""Where each step reads and writes, relative to the project: one place for every path."""

from recpipe import RecpipeError
from recpipe.params.core import dataset_name

RAW, TABLES, TEXT = "data/raw", "data/tables", "data/text"  # one folder per dataset in each
SAMPLES, SHOTS = "data/instructions/samples.parquet", "data/sample"
CROSS = "data/instructions/cross_domain.parquet"  # evaluate.dataset's samples, when it is set
ADAPTER, EVAL, LIVE, REPORTS = "data/adapter", "data/eval", "dvclive/train", "reports"
P5_DATA, P5_REPORTS, P5_LIVE = "data/p5", "reports/p5", "dvclive/p5"  # one folder per dataset in each
RECSYSLLM_DATA, RECSYSLLM_REPORTS, RECSYSLLM_LIVE = (
    "data/recsysllm",
    "reports/recsysllm",
    "dvclive/recsysllm",
)  # likewise
COLLAB_DATA, COLLAB_REPORTS = "data/collab", "reports/collab"  # likewise
# The P5 and pretraining runs' own folders in it: p5-<dataset>, recsysllm-<dataset>.
CHECKPOINTS = ".recpipe/checkpoints"


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


def test_samples(evaluate_dataset: str | None) -> str:
    """The samples file whose test split the evaluate and report steps read: `dataset`'s, or
    evaluate.dataset's when it is set (cross-domain)."""
    return SAMPLES if evaluate_dataset is None else CROSS
