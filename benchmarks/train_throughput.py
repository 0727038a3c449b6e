"""Training throughput: recpipe's training against a fixed-length padded HF Trainer.

recpipe pads each batch only to its own longest row and groups rows of similar length
(recpipe.model.train.encode + PadCollator + group_by_length), and runs the output layer and the loss
only at answer positions (recpipe.model.train.answer_loss_trainer). The naive way pads every row to
max_length (512) and takes the model's own loss over every position, as many fine-tuning scripts
do. A middle row shows the grouping alone. Both sides take the same LoRA config, batch
size and number of optimizer steps over the same K-shot rows (by default data/sample/train.parquet;
--train takes any such file) with the same model, in float32, and the script prints useful
(non-pad) tokens/s, padded tokens processed, the ratio, and the share of the hardware's float32
torch.mm rate (measured in the same run) each side reaches, counting 4 operations per matrix weight
per useful token (the forward pass, and the backward pass's input gradients: the frozen weights
get no gradient of their own).

    python benchmarks/train_throughput.py [--steps 6] [--batch-size 8] [--max-length 512] [--model NAME]
        [--train data/sample/train.parquet] [--mm-size 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import polars as pl
import torch
from _hardware import hardware_line, linear_params, matmul_flops

from recpipe import params
from recpipe.model.load import load
from recpipe.model.train import (
    IGNORE,
    PadCollator,
    add_lora,
    answer_loss_trainer,
    encode,
)


class FixedPadCollator(PadCollator):
    """The naive way: every row padded to the same fixed length."""

    def __init__(self, pad_id: int, length: int):
        super().__init__(pad_id)
        self.length = length

    def __call__(self, rows):
        ids = torch.full((len(rows), self.length), self.pad_id)
        labels = torch.full((len(rows), self.length), IGNORE)
        mask = torch.zeros((len(rows), self.length), dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k], labels[i, :k], mask[i, :k] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class CountingCollator:
    """Wraps a collator and counts the real and the padded tokens it hands the model."""

    def __init__(self, inner):
        self.inner, self.useful, self.processed = inner, 0, 0

    def __call__(self, rows):
        batch = self.inner(rows)
        self.useful += int(batch["attention_mask"].sum())
        self.processed += batch["input_ids"].numel()
        return batch


def run(name: str, sha256, p: params.Params, rows: list[dict], collator, group_by_length: bool, batch_size: int, steps: int, trainer_cls=None) -> tuple[float, CountingCollator]:
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model, _ = load(name, sha256)
    model = add_lora(model, p.lora)
    counting = CountingCollator(collator)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=p.train.lr,
            logging_steps=1, save_strategy="no", report_to=[], remove_unused_columns=False, use_cpu=not torch.cuda.is_available(),
            train_sampling_strategy="group_by_length" if group_by_length else "random", seed=0, dataloader_num_workers=0,
        )  # fmt: skip
        trainer = (trainer_cls or Trainer)(model=model, args=args, train_dataset=rows, data_collator=counting)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start, counting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512, help="the naive side's fixed padded length")
    parser.add_argument("--model", help="model name or local folder (default: model.name in params.yaml)")
    parser.add_argument("--train", default="data/sample/train.parquet", help="the K-shot training rows (prompt, answer)")
    parser.add_argument("--mm-size", type=int, default=1024, help="matrix size of the torch.mm rate measurement")
    args = parser.parse_args()
    p = params.load()
    name, sha = (args.model, None) if args.model else (p.model.name, p.model.sha256)
    shots = pl.read_parquet(args.train).head(args.steps * args.batch_size)  # one pass, same rows
    model, tok = load(name, sha)
    weights = linear_params(model)
    del model
    rows = encode(shots["prompt"].to_list(), shots["answer"].to_list(), tok, args.max_length)

    ours_cls = answer_loss_trainer()
    run(name, sha, p, rows, PadCollator(tok.pad_token_id), True, args.batch_size, 1, ours_cls)  # warm-up: first-call costs
    t_ours, ours = run(name, sha, p, rows, PadCollator(tok.pad_token_id), True, args.batch_size, args.steps, ours_cls)
    t_group, group = run(name, sha, p, rows, PadCollator(tok.pad_token_id), True, args.batch_size, args.steps)
    t_naive, naive = run(name, sha, p, rows, FixedPadCollator(tok.pad_token_id, args.max_length), False, args.batch_size, args.steps)
    peak = matmul_flops(torch.float32, args.mm_size)
    work = 4 * weights * ours.useful
    print(f"{'training (' + str(args.steps) + ' steps x batch ' + str(args.batch_size) + ')':<44}{'seconds':>9}{'useful tok/s':>14}{'tokens processed':>18}{'of torch.mm':>13}")
    print(f"{'recpipe: grouped, answer-only output layer':<44}{t_ours:>9.2f}{ours.useful / t_ours:>14.1f}{ours.processed:>18,}{work / t_ours / peak:>13.2%}")
    print(f"{'grouped, loss over every position':<44}{t_group:>9.2f}{group.useful / t_group:>14.1f}{group.processed:>18,}{work / t_group / peak:>13.2%}")
    print(f"{'naive: every row padded to ' + str(args.max_length):<44}{t_naive:>9.2f}{naive.useful / t_naive:>14.1f}{naive.processed:>18,}{work / t_naive / peak:>13.2%}")
    print(f"speed-up: {t_naive / t_ours:.2f}x over naive, {t_group / t_ours:.2f}x from the answer-only output layer   (useful tokens: {ours.useful:,} on all sides: {ours.useful == group.useful == naive.useful})")
    print(hardware_line(torch.float32, peak, args.mm_size))

if __name__ == "__main__":
    main()
