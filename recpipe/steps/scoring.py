"""The model the evaluate steps score with."""


def scoring_model(p, adapter: str | None = None, init=None):
    """(model, tokenizer) to score with: the base model in evaluate.dtype on model.device (with
    the pretraining merged in first when `init`, pretrained.start()'s, is given), with `adapter`
    merged into its weights if given (plain weights: faster to score). A device this machine lacks
    fails before anything is loaded. `p`: a step's params with the model and evaluate sections."""
    from recpipe.model.attention import pick_attention
    from recpipe.model.load import load, pick_device, pick_dtype

    device = pick_device(p.model.device)
    model, tokenizer = load(
        p.model.name,
        p.model.sha256,
        dtype=pick_dtype(p.evaluate.dtype, device),
        attention=pick_attention(p.model.attention, device),
    )
    model = model.to(device)  # before the adapter: it is loaded and merged on the same device
    if init is not None:
        model = init(model, tokenizer).to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload().to(device)
    return model.eval(), tokenizer


def score_test(p, name: str, model, tokenizer, positions=None, samples: str | None = None, collab=None) -> None:
    """Score the TALLRec test split with `model` as `name` (base or tuned): data/eval/<name>,
    reports/<name>.json and reports/roc_<name>.csv. `samples`: another copy of the test samples
    file (the hybrid prompts'); collab: their collaborative vectors (recpipe.model.collab)."""
    from recpipe.steps.paths import EVAL, REPORTS, test_samples
    from recpipe.tallrec.evaluate import evaluate

    # Scored with the training template's answer words, the ones the adapter learned (the
    # instructions step checks that evaluate.instructions' template has the same).
    evaluate(
        samples or test_samples(p.evaluate.dataset),
        f"{EVAL}/{name}",
        f"{REPORTS}/{name}.json",
        f"{REPORTS}/roc_{name}.csv",
        model,
        tokenizer,
        p.evaluate.batch_size,
        p.instructions.template,
        positions,
        collab=collab,
    )
