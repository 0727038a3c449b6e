"""p5_train@<dataset>: tune the P5 LoRA adapter on the training mixture (data/p5/<dataset>/adapter)."""

from recpipe.params.core import Common
from recpipe.params.model import Model
from recpipe.params.p5 import P5
from recpipe.params.recsysllm import Recsysllm
from recpipe.steps.paths import CHECKPOINTS, P5_DATA, P5_LIVE, P5_REPORTS, dataset_dir
from recpipe.steps.pretrained import intra_positions, start

FOR_EACH = "p5.datasets"


class StepParams(Common):
    model: Model
    p5: P5
    recsysllm: Recsysllm  # what p5.train.init pretrained starts from


def run(p: StepParams, dataset: str) -> None:
    from recpipe.model.train import answer_task, train

    data, reports = dataset_dir(P5_DATA, dataset), dataset_dir(P5_REPORTS, dataset)
    positions = intra_positions(p, p.p5.train.init, dataset)
    train(
        f"{data}/shots/train.parquet",
        f"{data}/shots/valid.parquet",
        f"{data}/adapter",
        f"{reports}/train.json",
        p.model,
        p.p5.lora,
        p.p5.train,
        p.seed,
        live_dir=dataset_dir(P5_LIVE, dataset),
        run_path=f"{reports}/train_run.json",
        checkpoints=dataset_dir(CHECKPOINTS, f"p5-{dataset}"),
        init=start(p.p5.train.init, dataset),
        task=answer_task(
            f"{data}/shots/train.parquet", f"{data}/shots/valid.parquet", p.p5.train.max_length, positions
        ),
    )
