"""The `report` stage: a markdown report with PNG plots: our metrics beside the history prior with
bootstrap intervals, the params behind them, the paper's AUCs."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recpipe import RecpipeError, log
from recpipe.io import atomic_path, read_mapping, read_parquet, write_json, write_png
from recpipe.markdown import params_section, table
from recpipe.metrics import paired_bootstrap_auc
from recpipe.params.evaluate import scored
from recpipe.tallrec.baselines import history_prior

REFERENCES = Path(__file__).parents[1] / "references"


def _read(path: Path, made_by: str):
    if not path.is_file():
        raise RecpipeError(f"{path}: not found (the {made_by} stage writes it; run `dvc repro {made_by}`)")
    if path.suffix == ".json":
        return read_mapping(path, made_by)
    if path.suffix == ".parquet":
        return read_parquet(path, made_by)
    return pl.read_csv(path, separator="\t" if path.suffix == ".tsv" else ",")


def plot_training(loss: pl.DataFrame, lr: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(loss["step"], loss["loss"], color="tab:blue", label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    lr_ax = ax.twinx()
    lr_ax.plot(lr["step"], lr["learning_rate"], color="tab:orange", linestyle="--", label="learning rate")
    lr_ax.set_ylabel("learning rate")
    ax.legend(handles=ax.get_lines() + lr_ax.get_lines(), loc="center right", fontsize="small")
    fig.tight_layout()
    write_png(fig, path)
    plt.close(fig)


def plot_roc(curves: dict[str, pl.DataFrame], aucs: dict[str, float | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, roc in curves.items():
        auc = aucs[name]
        ax.plot(roc["fpr"], roc["tpr"], label=f"{name} (AUC {auc:.3f})" if auc is not None else name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    write_png(fig, path)
    plt.close(fig)


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def intervals(eval_dir: Path, samples_path: Path, tables_dir: Path, p) -> dict:
    """AUCs of the base model, the tuned model and the history prior on the same test samples, with
    95% paired bootstrap intervals, and the tuned model against the other two."""
    base = _read(eval_dir / "base" / "predictions.parquet", "evaluate_base").sort("sample_id")
    tuned = _read(eval_dir / "tuned" / "predictions.parquet", "evaluate").sort("sample_id")
    if not base["sample_id"].equals(tuned["sample_id"]):
        raise RecpipeError(f"{eval_dir}: the base and tuned predictions are not of the same test samples")
    histories = _read(samples_path, "instructions").select("sample_id", "history_item_ids")
    tuned = tuned.join(histories, on="sample_id", how="left", maintain_order="left")  # each prediction's own history
    dataset, instructions = scored(p)  # cross-domain: the other dataset's ratings and threshold
    prior = history_prior(
        tuned, _read(tables_dir / "interactions.parquet", f"ingest@{dataset}"), instructions.like_threshold
    )
    labels = tuned["label"].cast(pl.Int64).to_list()
    named = {"tuned": tuned["p_yes"].to_list(), "base": base["p_yes"].to_list(), "history_prior": prior}
    return paired_bootstrap_auc(labels, named, [("tuned", "history_prior"), ("tuned", "base")], seed=p.seed)


def _interval_rows(iv: dict) -> list[list[str]]:
    rows = [
        [name, f"{iv[key]['auc']:.4f}", f"{iv[key]['ci'][0]:.4f} – {iv[key]['ci'][1]:.4f}", ""]
        for key, name in (("base", "base model"), ("history_prior", "history prior"), ("tuned", "LoRA-tuned"))
    ]
    for key, name in (
        ("tuned_vs_history_prior", "LoRA-tuned − history prior"),
        ("tuned_vs_base", "LoRA-tuned − base model"),
    ):
        rows.append(
            [
                name,
                f"{iv[key]['difference']:+.4f}",
                f"{iv[key]['ci'][0]:+.4f} – {iv[key]['ci'][1]:+.4f}",
                f"{iv[key]['p']:.4f}",
            ]
        )
    return rows


def shots(p) -> str:
    """K as the report names it: a number, or `all` (sample.k null)."""
    return "all" if p.sample.k is None else str(p.sample.k)


def render(base: dict, tuned: dict, trained: dict, p, reference: dict, plots: dict[str, str], iv: dict) -> str:
    rows = ["auc", "accuracy", "predicted_positive_rate", "label_positive_rate", "n"]
    ours = tuned.get("auc")
    paper = []
    for k, aucs in sorted(reference["auc_by_k"].items()):
        mine = k == p.sample.k
        here = f"**{ours * reference['scale']:.2f}**" if mine and ours is not None else ""
        paper.append([f"**{k}** (this run)" if mine else str(k), *(f"{a:.2f}" for a in aucs), here])
    scored_on, instructions = scored(p)
    cross = [
        f"Cross-domain: trained on {p.dataset}, scored on the test split of {scored_on} (the paper's table below is in-domain).",
        "",
    ]
    lines = [
        f"# recpipe report: TALLRec on {p.dataset}, K = {shots(p)}, seed {p.seed}",
        "",
        *(cross if scored_on != p.dataset else []),
        "## Test split",
        "",
        *table(["metric", "base model", "LoRA-tuned"], ([r, _fmt(base.get(r)), _fmt(tuned.get(r))] for r in rows)),
        "",
        "## Against the history prior",
        "",
        "The history prior scores a sample by the share of liked items in the history its prompt lists.",
        "Intervals: 95% over the test samples drawn with replacement (2,000 draws, every scorer on the",
        "same draws); p: two-sided paired bootstrap test of the difference.",
        "",
        *table(["AUC", "value", "95% interval", "p"], _interval_rows(iv)),
        "",
        "## Training",
        "",
        *table(["metric", "value"], ([k, _fmt(v)] for k, v in sorted(trained.items()))),
        "",
        f"![training loss and learning rate]({plots['training']})",
        f"![ROC curves]({plots['roc']})",
        "",
        f"## Against the paper ({reference['table']} of arXiv {reference['arxiv']}, AUC × {reference['scale']})",
        "",
        *table(["K", *reference["methods"], "recpipe (this run)"], paper),
    ]
    if p.sample.k not in reference["auc_by_k"]:
        lines.append(
            f"\nThe paper has no row for K = {shots(p)}; this run's AUC × {reference['scale']}: {_fmt(ours and ours * reference['scale'])}."
        )
    params = {
        "model.name": f"`{p.model.name}`",
        "instructions": f"template {p.instructions.template}, history {p.instructions.history_len}, liked if rating > {p.instructions.like_threshold:g}, split {p.instructions.split}",
        "sample": f"k {p.sample.k}, balanced {p.sample.balanced}, valid_size {p.sample.valid_size}, seed {p.seed}",
        "lora": f"rank {p.lora.rank}, alpha {p.lora.alpha}, dropout {p.lora.dropout:g}, modules {', '.join(p.lora.target_modules)}",
        "train": ", ".join(f"{k} {v}" for k, v in p.train.model_dump().items()),
    }
    if p.collab.model != "none":
        params["collab"] = (
            f"{p.collab.model} tokens at {', '.join(p.collab.tokens)}, {p.collab.recipe}; the encoders learned from "
            "every training interaction (CoLLM's warm setting), the language model from the K prompts above"
        )
    if p.evaluate.dataset is not None:
        params["evaluate"] = (
            f"dataset {scored_on}, instructions: template {instructions.template}, history {instructions.history_len}, liked if rating > {instructions.like_threshold:g}, split {instructions.split}"
        )
    lines += ["", *params_section(params)]
    return "\n".join(lines)


def report(
    reports_dir: str | Path,
    live_dir: str | Path,
    out_path: str | Path,
    p,
    eval_dir: str | Path,
    samples_path: str | Path,
    tables_dir: str | Path,
    reference: str = "tallrec",
) -> str:
    reports, live, out = Path(reports_dir), Path(live_dir), Path(out_path)
    base = _read(reports / "base.json", "evaluate_base")
    tuned = _read(reports / "tuned.json", "evaluate")
    trained = _read(reports / "train.json", "train") | _read(reports / "train_run.json", "train")
    curves = {
        "base model": _read(reports / "roc_base.csv", "evaluate_base"),
        "LoRA-tuned": _read(reports / "roc_tuned.csv", "evaluate"),
    }
    loss = _read(live / "plots" / "metrics" / "loss.tsv", "train")
    lr = _read(live / "plots" / "metrics" / "learning_rate.tsv", "train")
    ref = read_mapping(REFERENCES / f"{reference}.yaml")
    plots = {"training": "plots/training.png", "roc": "plots/roc.png"}  # relative to the report
    plot_training(loss, lr, out.parent / plots["training"])
    plot_roc(curves, {"base model": base.get("auc"), "LoRA-tuned": tuned.get("auc")}, out.parent / plots["roc"])
    iv = intervals(Path(eval_dir), Path(samples_path), Path(tables_dir), p)
    write_json(iv, reports / "intervals.json")
    text = render(base, tuned, trained, p, ref, plots, iv)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    log.info("report: wrote %s", out)
    return text
