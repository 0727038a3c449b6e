"""evaluate_base: score the test split with the untouched base model (data/eval/base, reports/base.json)."""

from recpipe.params.core import Common
from recpipe.params.evaluate import Evaluate
from recpipe.params.instructions import Instructions
from recpipe.params.model import Model
from recpipe.steps.scoring import score_test, scoring_model

FOR_EACH = None


class StepParams(Common):
    instructions: Instructions
    model: Model
    evaluate: Evaluate


def run(p: StepParams) -> None:
    score_test(p, "base", *scoring_model(p))
