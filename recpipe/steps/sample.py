"""sample: the K-shot training set and the validation samples, drawn from the training split
(data/sample)."""

from recpipe.params.core import Common
from recpipe.params.sample import Sample
from recpipe.steps.paths import SAMPLES, SHOTS

FOR_EACH = None


class StepParams(Common):
    sample: Sample


def run(p: StepParams) -> None:
    from recpipe.tallrec.sample import sample

    sample(SAMPLES, SHOTS, p.sample, p.seed)
