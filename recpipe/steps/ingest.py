"""ingest@<dataset>: read a dataset's files in its format into checked tables (data/tables/<dataset>)."""

from recpipe.params.core import Common
from recpipe.params.registry import Registry
from recpipe.steps.paths import RAW, TABLES, dataset_dir

FOR_EACH = "datasets"


class StepParams(Common):
    registry: Registry


def run(p: StepParams, dataset: str) -> None:
    from recpipe.data.ingest import ingest

    ingest(dataset_dir(RAW, dataset), dataset_dir(TABLES, dataset), p.registry[dataset])
