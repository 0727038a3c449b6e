"""Masked pretraining against plain causal-LM training on the same texts, in one run: what
RecSysLLM's blank infilling (part B's extra tokens, the 4D part-A/part-B mask, the intra-position
embedding) costs per text token.

One batch of pretraining texts (recpipe.recsysllm.corpus.documents from textualize's output), the
model in --dtype with the pretraining adapter (recsysllm.lora) and an AdamW step under autocast,
as the trainer runs it. The causal side trains on the texts as they are, with the loss on every
token; the masked side on their infilling samples (recsysllm's switches from params.yaml), with
the loss on part B (recpipe.recsysllm.pretrain.infill_loss). Each side warms up, then times
--steps steps on its batch. Text tokens/s counts the texts' own tokens, the same on both sides;
sequence tokens/s what the model runs (the masked side adds [START], [END] and the mask tokens).

    python benchmarks/pretrain_throughput.py [--model NAME] [--text data/text/ml-100k]
        [--batch-size 8] [--steps 3] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse

import polars as pl
import torch

from _hardware import hardware_line, linear_params, matmul_flops
from _steps import time_steps, training_step
from recpipe.model.attention import pick_attention
from recpipe.model.load import load
from recpipe.model.train import PadCollator, add_lora, answer_loss, encode
from recpipe.params import schema as params
from recpipe.recsysllm.corpus import documents
from recpipe.recsysllm.pretrain import infill_loss, infill_task, sampling


def run(name, sha, p, docs, dtype, steps, masked: bool):
    """(seconds per step, text tokens, sequence tokens, last loss) of one side."""
    model, tok = load(
        name, sha, dtype=dtype, attention=pick_attention(p.model.attention, torch.device("cpu"))
    )  # as the trainer runs it
    torch.manual_seed(0)
    text_tokens = sum(len(tok(t, add_special_tokens=False).input_ids) for t in docs["text"].to_list())
    if masked:
        task = infill_task(docs.with_columns(split=pl.lit("train")), p.recsysllm, p.seed)(model, tok)
        rows, loss_fn, extras = task.rows, infill_loss, task.lora_extras
        batch = task.collate(rows)
    else:
        # Prompt empty, the text as the answer: every token is a target, as causal-LM pretraining has it.
        rows, loss_fn, extras = encode([""] * docs.height, docs["text"].to_list(), tok, 4096), answer_loss, {}
        batch = PadCollator(tok.pad_token_id)(rows)
    model = add_lora(model, p.recsysllm.lora, **extras)
    model.train()
    seconds, loss = time_steps(training_step(model, loss_fn, batch, dtype, p.recsysllm.train.lr), steps)
    sequence = sum(len(r["input_ids"]) for r in rows)
    return seconds, text_tokens, sequence, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model name or local folder (default: model.name in params.yaml)")
    parser.add_argument(
        "--text", default="data/text/ml-100k", help="textualize's output folder (users, items, histories)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--mm-size", type=int, default=1024, help="matrix size of the torch.mm rate measurement")
    args = parser.parse_args()
    p = params.load()
    name, sha = (args.model, None) if args.model else (p.model.name, p.model.sha256)
    dtype = getattr(torch, args.dtype)
    users, items, histories = (pl.read_parquet(f"{args.text}/{n}.parquet") for n in ("users", "items", "histories"))
    held_out = pl.DataFrame(schema={"user_id": pl.Int64, "item_id": pl.Int64})
    docs = documents(users, items, histories, held_out, sampling(p.recsysllm), p.seed).head(args.batch_size)
    model, _ = load(name, sha)
    weights = linear_params(model)
    del model
    peak = matmul_flops(dtype, args.mm_size)
    sides = {side: run(name, sha, p, docs, dtype, args.steps, masked=side == "masked") for side in ("causal", "masked")}
    r = p.recsysllm
    print(
        f"one step, batch {docs.height} texts, {args.dtype} body, LoRA r {r.lora.rank} on {', '.join(r.lora.target_modules)}"
    )
    print(f"masked: objectives {dict(r.objectives)}, ratio {r.ratio}, order {r.order}, 2D positions {r.positions_2d}")
    print(f"{'side':<8}{'s/step':>9}{'text tok/s':>12}{'seq tok/s':>11}{'of torch.mm':>13}{'loss':>9}")
    for side, (seconds, text, sequence, loss) in sides.items():
        print(
            f"{side:<8}{seconds:>9.3f}{text / seconds:>12.1f}{sequence / seconds:>11.1f}{4 * weights * sequence / seconds / peak:>13.1%}{loss:>9.4f}"
        )
    (c_s, c_text, c_seq, _), (m_s, m_text, m_seq, _) = sides["causal"], sides["masked"]
    print(
        f"masked vs causal: {(m_text / m_s) / (c_text / c_s):.2f}x the text tokens/s ({m_seq / c_seq:.2f}x the sequence tokens per text)"
    )
    print(hardware_line(dtype, peak, args.mm_size))


if __name__ == "__main__":
    main()
