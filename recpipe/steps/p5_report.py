"""p5_report@<dataset>: reports/p5/<dataset>/report.md, P5's families beside the baselines and the
paper's figures, with paired tests on the test cases."""

from recpipe.params.core import Common
from recpipe.params.model import Model
from recpipe.params.p5 import P5
from recpipe.steps.paths import P5_DATA, P5_REPORTS, dataset_dir

FOR_EACH = "p5.datasets"


class StepParams(Common):
    model: Model
    p5: P5


def run(p: StepParams, dataset: str) -> None:
    from recpipe.p5.report import write_p5_report

    summary = {"dataset": dataset, "seed": p.seed, "model": p.model.name, "p5": p.p5.model_dump(exclude={"datasets"})}
    out, data = dataset_dir(P5_REPORTS, dataset), dataset_dir(P5_DATA, dataset)
    test = p.p5.evaluate_split == "test"  # the baselines score the test cases: nothing to set beside validation figures
    predictions = {"recpipe": f"{data}/eval/predictions.parquet", "baselines": f"{data}/baselines/predictions.parquet"}
    write_p5_report(
        dataset,
        f"{out}/families",
        f"{out}/baselines.json" if test else None,
        f"{out}/report.md",
        summary,
        predictions if test else None,
        p.p5.indexing,
        p.p5.evaluate_split,
    )
