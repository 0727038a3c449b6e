"""Training throughput: recpipe's training against a fixed-length padded HF Trainer.

recpipe pads each batch only to its own longest row and groups rows of similar length
(recpipe.model.train.encode + PadCollator + group_by_length), runs the output layer and the loss
only at answer positions (recpipe.model.train.answer_loss_trainer), and on a CPU picks attention by
row length (model.attention auto: recpipe.model.attention). Rows, each the HF Trainer over the same
steps:
- recpipe as it trains (model.attention auto);
- the same with PyTorch's fused sdpa attention at every length (the transformers default);
- grouped, with the model's own loss over every position (sdpa);
- naive: every row padded to max_length (512), the model's own loss, sdpa, as many fine-tuning
  scripts do.
Every side takes the same LoRA config, batch size and number of optimizer steps over the same
K-shot rows (by default data/sample/train.parquet; --train takes any such file) with the same model
in --dtype (auto: bfloat16 on a CPU with AVX512-BF16/AMX, as the train stage runs), and the script
prints useful (non-pad) tokens/s, padded tokens processed, the ratios, and the share of the
hardware's torch.mm rate in that dtype (measured in the same run) each side reaches, counting 4
operations per matrix weight per useful token (the forward pass, and the backward pass's input
gradients: the frozen weights get no gradient of their own).

    python benchmarks/train_throughput.py [--steps 6] [--batch-size 8] [--max-length 512] [--model NAME]
        [--train data/sample/train.parquet] [--dtype auto] [--mm-size 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import polars as pl
import torch

from _hardware import hardware_line, linear_params, matmul_flops
from recpipe.model.attention import pick_attention
from recpipe.model.load import load, pick_dtype
from recpipe.model.train import (
    IGNORE,
    PadCollator,
    add_lora,
    answer_loss_trainer,
    encode,
)
from recpipe.params import schema as params


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


def run(
    name: str,
    sha256,
    p: params.Params,
    rows: list[dict],
    collator,
    group_by_length: bool,
    batch_size: int,
    steps: int,
    dtype: torch.dtype,
    attention: str,
    trainer_cls=None,
) -> tuple[float, CountingCollator]:
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model, _ = load(name, sha256, dtype=dtype, attention=pick_attention(attention, torch.device("cpu")))
    model = add_lora(model, p.lora)
    counting = CountingCollator(collator)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            learning_rate=p.train.lr,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            remove_unused_columns=False,
            use_cpu=not torch.cuda.is_available(),
            train_sampling_strategy="group_by_length" if group_by_length else "random",
            seed=0,
            dataloader_num_workers=0,
            bf16=dtype == torch.bfloat16,
        )
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
    parser.add_argument(
        "--train", default="data/sample/train.parquet", help="the K-shot training rows (prompt, answer)"
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="the frozen weights' dtype, as train.dtype",
    )
    parser.add_argument("--mm-size", type=int, default=1024, help="matrix size of the torch.mm rate measurement")
    args = parser.parse_args()
    p = params.load()
    name, sha = (args.model, None) if args.model else (p.model.name, p.model.sha256)
    dtype = pick_dtype(args.dtype, torch.device("cpu"))
    shots = pl.read_parquet(args.train).head(args.steps * args.batch_size)  # one pass, same rows
    model, tok = load(name, sha)
    weights = linear_params(model)
    del model
    rows = encode(shots["prompt"].to_list(), shots["answer"].to_list(), tok, args.max_length)

    ours_cls = answer_loss_trainer()
    pad = tok.pad_token_id
    run(
        name, sha, p, rows, PadCollator(pad), True, args.batch_size, 1, dtype, "auto", ours_cls
    )  # warm-up: first-call costs
    sides = {  # label: (seconds, counted tokens)
        "recpipe (attention auto)": run(
            name, sha, p, rows, PadCollator(pad), True, args.batch_size, args.steps, dtype, "auto", ours_cls
        ),
        "recpipe, sdpa attention": run(
            name, sha, p, rows, PadCollator(pad), True, args.batch_size, args.steps, dtype, "sdpa", ours_cls
        ),
        "grouped, full loss, sdpa": run(
            name, sha, p, rows, PadCollator(pad), True, args.batch_size, args.steps, dtype, "sdpa"
        ),
        f"naive: padded to {args.max_length}, full loss, sdpa": run(
            name,
            sha,
            p,
            rows,
            FixedPadCollator(pad, args.max_length),
            False,
            args.batch_size,
            args.steps,
            dtype,
            "sdpa",
        ),
    }
    peak = matmul_flops(dtype, args.mm_size)
    useful = [counted.useful for _, counted in sides.values()]
    work = 4 * weights * useful[0]
    print(
        f"{'training (' + str(args.steps) + ' steps x batch ' + str(args.batch_size) + ', ' + str(dtype).removeprefix('torch.') + ')':<44}{'seconds':>9}{'useful tok/s':>14}{'tokens processed':>18}{'of torch.mm':>13}"
    )
    for label, (seconds, counted) in sides.items():
        print(
            f"{label:<44}{seconds:>9.2f}{counted.useful / seconds:>14.1f}{counted.processed:>18,}{work / seconds / peak:>13.2%}"
        )
    ours = next(iter(sides.values()))[0]
    for label, (seconds, _) in list(sides.items())[1:]:
        print(f"recpipe vs {label}: {seconds / ours:.2f}x the tokens/s")
    print(f"same useful tokens on every side: {len(set(useful)) == 1}")
    print(hardware_line(dtype, peak, args.mm_size))


if __name__ == "__main__":
    main()
