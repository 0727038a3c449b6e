"""report: reports/report.md with plots: the base and tuned AUCs with intervals beside the history
prior and the TALLRec paper's figures."""

from recpipe.params.collab import Collab
from recpipe.params.core import Common
from recpipe.params.evaluate import Evaluate, scored
from recpipe.params.instructions import Instructions
from recpipe.params.model import Model
from recpipe.params.sample import Sample
from recpipe.params.train import Lora, Train
from recpipe.steps.paths import EVAL, LIVE, REPORTS, TABLES, dataset_dir, test_samples

FOR_EACH = None


class StepParams(Common):
    instructions: Instructions
    sample: Sample
    model: Model
    lora: Lora
    train: Train
    evaluate: Evaluate
    collab: Collab


def run(p: StepParams) -> None:
    from recpipe.tallrec.report import report

    tables = dataset_dir(TABLES, scored(p)[0])
    report(REPORTS, LIVE, f"{REPORTS}/report.md", p, EVAL, test_samples(p.evaluate.dataset), tables)
