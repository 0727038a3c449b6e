"""collab@<dataset>: train the collaborative encoders (BPR-MF, SASRec) on the dataset's
interactions with every TALLRec valid and test pair held out, and score TALLRec's test samples with
them (data/collab/<dataset>, reports/collab/<dataset>.json)."""

from recpipe import RecpipeError
from recpipe.params.collab import Collab
from recpipe.params.core import Common
from recpipe.steps.paths import COLLAB_DATA, COLLAB_REPORTS, SAMPLES, TABLES, dataset_dir

FOR_EACH = "collab.datasets"


class StepParams(Common):
    collab: Collab


def run(p: StepParams, dataset: str) -> None:
    from recpipe.collab.scoring import collab
    from recpipe.io import atomic_dir

    out = dataset_dir(COLLAB_DATA, dataset)  # refuses a bad name before anything else
    if dataset != p.dataset:
        # The encoders hold out, and are early-stopped on, the TALLRec samples of `dataset`.
        raise RecpipeError(f"collab.datasets: {dataset!r}: only the TALLRec dataset ({p.dataset!r}) has encoders")
    with atomic_dir(out) as tmp:
        collab(
            f"{dataset_dir(TABLES, dataset)}/interactions.parquet",
            SAMPLES,
            tmp,
            f"{COLLAB_REPORTS}/{dataset}.json",
            p.collab,
            p.seed,
        )
