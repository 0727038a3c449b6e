"""families@<dataset>: the P5 task families' samples of a dataset (data/p5/<dataset>/families)."""

from recpipe.params.core import Common
from recpipe.params.p5 import P5
from recpipe.params.registry import Registry
from recpipe.steps.paths import P5_DATA, TABLES, TEXT, dataset_dir

FOR_EACH = "p5.datasets"


class StepParams(Common):
    p5: P5
    registry: Registry


def run(p: StepParams, dataset: str) -> None:
    from recpipe.io import read_parquet
    from recpipe.p5.families import families
    from recpipe.p5.indexing import item_names

    items = read_parquet(f"{dataset_dir(TEXT, dataset)}/items.parquet", "textualize")
    interactions = read_parquet(f"{dataset_dir(TABLES, dataset)}/interactions.parquet", "ingest")
    names = item_names(items, interactions, p.p5.indexing, p.seed, p.p5.clusters)
    families(
        dataset_dir(TABLES, dataset),
        dataset_dir(TEXT, dataset),
        f"{dataset_dir(P5_DATA, dataset)}/families",
        dataset,
        p.p5,
        p.seed,
        p.registry[dataset].rating_max,
        names,
    )
