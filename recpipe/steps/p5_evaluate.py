"""p5_evaluate@<dataset>: score the P5 test (or valid) cases of every family, seen and unseen
templates (data/p5/<dataset>/eval, reports/p5/<dataset>/families)."""

from recpipe.params.core import Common
from recpipe.params.evaluate import Evaluate
from recpipe.params.model import Model
from recpipe.params.p5 import P5
from recpipe.params.recsysllm import Recsysllm
from recpipe.params.registry import Registry
from recpipe.steps.paths import P5_DATA, P5_REPORTS, TABLES, dataset_dir
from recpipe.steps.pretrained import intra_positions, start, with_positions
from recpipe.steps.scoring import scoring_model

FOR_EACH = "p5.datasets"


class StepParams(Common):
    model: Model
    evaluate: Evaluate  # its dtype
    p5: P5
    recsysllm: Recsysllm
    registry: Registry


def run(p: StepParams, dataset: str) -> None:
    from recpipe.p5.evaluate import evaluate_p5

    data = dataset_dir(P5_DATA, dataset)
    model, tokenizer = scoring_model(p, f"{data}/adapter", start(p.p5.train.init, dataset))
    d = p.registry[dataset]
    evaluate_p5(
        f"{data}/shots/{p.p5.evaluate_split}.parquet",
        f"{data}/families/names.parquet",
        f"{dataset_dir(TABLES, dataset)}/interactions.parquet",
        f"{data}/eval",
        f"{dataset_dir(P5_REPORTS, dataset)}/families",
        model,
        tokenizer,
        p.p5,
        (d.rating_min, d.rating_max),
        with_positions(intra_positions(p, p.p5.train.init, dataset), model, tokenizer),
    )
