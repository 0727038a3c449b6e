"""train: tune the TALLRec LoRA adapter on the K shots, selected on validation AUC (data/adapter)."""

from recpipe.params.core import Common
from recpipe.params.instructions import Instructions
from recpipe.params.model import Model
from recpipe.params.recsysllm import Recsysllm
from recpipe.params.train import Lora, Train
from recpipe.steps.paths import ADAPTER, LIVE, REPORTS, SHOTS
from recpipe.steps.pretrained import intra_positions, start

FOR_EACH = None


class StepParams(Common):
    instructions: Instructions
    model: Model
    lora: Lora
    train: Train
    recsysllm: Recsysllm  # what train.init pretrained starts from


def run(p: StepParams) -> None:
    from recpipe.model.train import answer_task, train
    from recpipe.tallrec.evaluate import valid_auc

    positions = intra_positions(p, p.train.init, p.dataset)
    train(
        f"{SHOTS}/train.parquet",
        f"{SHOTS}/valid.parquet",
        ADAPTER,
        f"{REPORTS}/train.json",
        p.model,
        p.lora,
        p.train,
        p.seed,
        live_dir=LIVE,
        validate=valid_auc(p.instructions.template, p.train.eval_batch_size, positions),
        run_path=f"{REPORTS}/train_run.json",
        init=start(p.train.init, p.dataset),
        task=answer_task(f"{SHOTS}/train.parquet", f"{SHOTS}/valid.parquet", p.train.max_length, positions),
    )
