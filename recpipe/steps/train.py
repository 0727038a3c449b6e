"""train: tune the TALLRec LoRA adapter on the K shots, selected on validation AUC (data/adapter);
with collaborative tokens (collab.model), CoLLM's recipe: the adapter on the text prompts, then
the projector on the hybrid prompts with the adapter frozen (or both at once)."""

import tempfile

from recpipe import RecpipeError
from recpipe.params.collab import Collab
from recpipe.params.core import Common
from recpipe.params.instructions import Instructions
from recpipe.params.model import Model
from recpipe.params.recsysllm import Recsysllm
from recpipe.params.train import Lora, Train
from recpipe.steps.collab_tokens import cf_vectors, hybrid
from recpipe.steps.paths import ADAPTER, LIVE, REPORTS, SHOTS
from recpipe.steps.pretrained import intra_positions, start

FOR_EACH = None
TRAIN, VALID = f"{SHOTS}/train.parquet", f"{SHOTS}/valid.parquet"


class StepParams(Common):
    instructions: Instructions
    model: Model
    lora: Lora
    train: Train
    recsysllm: Recsysllm  # what train.init pretrained starts from
    collab: Collab  # collaborative tokens, and the encoders they come from


def run(p: StepParams) -> None:
    if p.collab.model == "none":
        text_only(p, ADAPTER, f"{REPORTS}/train.json", LIVE)
        return
    if p.train.init != "base":
        raise RecpipeError("collab.model: collaborative tokens start from the base model (train.init base)")
    if p.collab.recipe == "one_step":
        with_tokens(p, p.train)
        return
    with tempfile.TemporaryDirectory(prefix="recpipe-step1-") as step1:  # only its adapter is kept, in step 2's
        text_only(p, f"{step1}/adapter", f"{step1}/train.json", f"{step1}/live")
        with_tokens(p, p.collab.train, f"{step1}/adapter")


def text_only(p: StepParams, adapter: str, metrics: str, live: str) -> None:
    """TALLRec's training: the adapter on the text prompts."""
    from recpipe.model.train import answer_task, train
    from recpipe.tallrec.evaluate import valid_auc

    positions = intra_positions(p, p.train.init, p.dataset)
    train(
        TRAIN,
        VALID,
        adapter,
        metrics,
        p.model,
        p.lora,
        p.train,
        p.seed,
        live_dir=live,
        validate=valid_auc(p.instructions.template, p.train.eval_batch_size, positions),
        run_path=f"{REPORTS}/train_run.json",
        init=start(p.train.init, p.dataset),
        task=answer_task(TRAIN, VALID, p.train.max_length, positions),
    )


def with_tokens(p: StepParams, params, step1: str | None = None) -> None:
    """CoLLM's training on the hybrid prompts: the projector alone on step 1's adapter (`step1`), or
    with a new adapter (one step), trained by `params`."""
    from recpipe.model.collab import collab_task
    from recpipe.model.train import train
    from recpipe.tallrec.evaluate import valid_auc

    cf = cf_vectors(p, p.dataset)
    with hybrid(TRAIN, VALID) as (shots, valid):
        train(
            shots,
            valid,
            ADAPTER,
            f"{REPORTS}/train.json",
            p.model,
            p.lora,
            params,
            p.seed,
            live_dir=LIVE,
            validate=valid_auc(p.instructions.template, params.eval_batch_size, collab=cf),
            run_path=f"{REPORTS}/train_run.json",
            task=collab_task(shots, valid, params.max_length, cf, p.collab, step1_adapter=step1),
        )
