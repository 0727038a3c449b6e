"""textualize@<dataset>: write a dataset's items and users as text (data/text/<dataset>)."""

from recpipe.params.core import Common
from recpipe.params.registry import Registry
from recpipe.params.textualize import Textualize
from recpipe.steps.paths import TABLES, TEXT, dataset_dir

FOR_EACH = "datasets"


class StepParams(Common):
    textualize: Textualize
    registry: Registry


def run(p: StepParams, dataset: str) -> None:
    from recpipe.data.textualize import textualize

    textualize(
        dataset_dir(TABLES, dataset),
        dataset_dir(TEXT, dataset),
        template=p.registry[dataset].template or dataset,
        move_article=p.textualize.article_first,
    )
