"""evaluate: score the test split with the tuned adapter, on the pretrained model when train.init
is pretrained (data/eval/tuned, reports/tuned.json)."""

from recpipe.params.core import Common
from recpipe.params.evaluate import Evaluate
from recpipe.params.instructions import Instructions
from recpipe.params.model import Model
from recpipe.params.recsysllm import Recsysllm
from recpipe.params.train import Train
from recpipe.steps.paths import ADAPTER
from recpipe.steps.pretrained import intra_positions, start, with_positions
from recpipe.steps.scoring import score_test, scoring_model

FOR_EACH = None


class StepParams(Common):
    instructions: Instructions
    model: Model
    train: Train
    evaluate: Evaluate
    recsysllm: Recsysllm


def run(p: StepParams) -> None:
    model, tokenizer = scoring_model(p, ADAPTER, start(p.train.init, p.dataset))
    positions = with_positions(intra_positions(p, p.train.init, p.dataset), model, tokenizer)
    score_test(p, "tuned", model, tokenizer, positions)
