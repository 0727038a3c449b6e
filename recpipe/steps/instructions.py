"""instructions: TALLRec's yes/no samples of `dataset`, split; with evaluate.dataset set, that
dataset's samples too, built by the same code (data/instructions)."""

from recpipe.params.collab import Collab
from recpipe.params.core import Common
from recpipe.params.evaluate import Evaluate, scored
from recpipe.params.instructions import Instructions
from recpipe.steps.paths import CROSS, SAMPLES, TEXT, dataset_dir

FOR_EACH = None


class StepParams(Common):
    instructions: Instructions
    evaluate: Evaluate
    collab: Collab  # with collaborative tokens, the hybrid prompts too


def run(p: StepParams) -> None:
    from pathlib import Path

    from recpipe.tallrec.instructions import same_answers, write_instructions

    tokens = p.collab.tokens if p.collab.model != "none" else ()
    write_instructions(dataset_dir(TEXT, p.dataset), SAMPLES, p.instructions, tokens)  # streamed: nothing read back
    if p.evaluate.dataset is None:
        Path(CROSS).unlink(missing_ok=True)  # left by an earlier cross-domain run outside DVC
        return
    name, params = scored(p)
    same_answers(p.instructions.template, params.template)
    write_instructions(dataset_dir(TEXT, name), CROSS, params)
