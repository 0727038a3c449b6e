"""download@<dataset>: fetch a dataset's files from the first of its sources whose checksum
verifies (data/raw/<dataset>)."""

from recpipe.params.core import Common
from recpipe.params.registry import Registry
from recpipe.steps.paths import RAW, dataset_dir

FOR_EACH = "datasets"


class StepParams(Common):
    registry: Registry


def run(p: StepParams, dataset: str) -> None:
    from recpipe.data.download import download

    download(dataset, p.registry[dataset], dataset_dir(RAW, dataset))
