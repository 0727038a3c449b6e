"""evaluate: score the test split with the tuned adapter, on the pretrained model when train.init
is pretrained, with the collaborative tokens when collab.model is set (data/eval/tuned,
reports/tuned.json)."""

from recpipe.params.collab import Collab
from recpipe.params.core import Common
from recpipe.params.evaluate import Evaluate
from recpipe.params.instructions import Instructions
from recpipe.params.model import Model
from recpipe.params.recsysllm import Recsysllm
from recpipe.params.train import Train
from recpipe.steps.collab_tokens import cf_vectors, hybrid
from recpipe.steps.paths import ADAPTER, test_samples
from recpipe.steps.pretrained import intra_positions, start, with_positions
from recpipe.steps.scoring import score_test, scoring_model

FOR_EACH = None


class StepParams(Common):
    instructions: Instructions
    model: Model
    train: Train
    evaluate: Evaluate
    recsysllm: Recsysllm
    collab: Collab


def run(p: StepParams) -> None:
    model, tokenizer = scoring_model(p, ADAPTER, start(p.train.init, p.dataset))
    if p.collab.model == "none":
        positions = with_positions(intra_positions(p, p.train.init, p.dataset), model, tokenizer)
        score_test(p, "tuned", model, tokenizer, positions)
        return
    from recpipe.model.collab import attach_projector

    model = attach_projector(model, ADAPTER)
    with hybrid(test_samples(p.evaluate.dataset)) as (samples,):
        score_test(p, "tuned", model, tokenizer, samples=samples, collab=cf_vectors(p, p.dataset))
