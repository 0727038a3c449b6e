"""Where fine-tuning starts (train.init, p5.train.init): the base model, or the dataset's RecSysLLM
masked pretraining with its intra positions."""

from recpipe.steps.paths import RECSYSLLM_DATA, dataset_dir


def start(init: str, dataset: str):
    """train's `init`: None (the base model), or the dataset's pretrained model
    (recsysllm.pretrain.Pretrained)."""
    if init == "base":
        return None
    from recpipe.recsysllm.pretrain import Pretrained

    return Pretrained(f"{dataset_dir(RECSYSLLM_DATA, dataset)}/pretrained")


def intra_positions(p, init: str, dataset: str):
    """(model, tokenizer) -> intra positions for a model fine-tuned from `init`, or None (plain):
    recsysllm.dynamic_positions on a pretraining with 2D positions (recpipe.recsysllm.positions).
    `p`: a step's params with the recsysllm section."""
    if not p.recsysllm.intra_positions(init):
        return None
    from recpipe.recsysllm.positions import EntityPositions

    return EntityPositions(f"{dataset_dir(RECSYSLLM_DATA, dataset)}/corpus.parquet")


def with_positions(positions, model, tokenizer):
    """intra_positions' factory applied to a loaded model, or None."""
    return positions(model, tokenizer) if positions is not None else None
