"""p5_sample@<dataset>: the P5 training mixture and the valid and test cases (data/p5/<dataset>/shots)."""

from recpipe.params.core import Common
from recpipe.params.p5 import P5
from recpipe.steps.paths import P5_DATA, dataset_dir

FOR_EACH = "p5.datasets"


class StepParams(Common):
    p5: P5


def run(p: StepParams, dataset: str) -> None:
    from recpipe.p5.sample import p5_sample

    data = dataset_dir(P5_DATA, dataset)
    p5_sample(f"{data}/families", f"{data}/shots", p.p5, p.seed)
