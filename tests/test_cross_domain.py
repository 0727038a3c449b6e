"""evaluate.dataset: the adapter tuned on one dataset, scored on another's test split."""

import json
from pathlib import Path

import polars as pl
import pytest

from conftest import (
    atomic_files,
    make_ratings,
    make_tiny_model,
    params_dict,
    source,
    write_zip,
)
from recpipe import RecpipeError
from recpipe.cli import STEPS
from recpipe.params.evaluate import scored
from recpipe.params.schema import parse
from recpipe.steps import paths
from recpipe.tallrec.instructions import instructions as build_instructions


def two_datasets(tmp_path, archives, **evaluate) -> dict:
    """ml-100k (the session's fixture) and `other`, a second generated dataset of its own ratings."""
    other = write_zip(tmp_path / "other.whl", atomic_files(*make_ratings(seed=7)))
    data = params_dict([source("atomic", archives["atomic"])], sample={"k": 8, "valid_size": 10})
    data["registry"]["other"] = {"template": "ml-100k", "sources": [source("atomic", other)]}
    data["datasets"] = ["ml-100k", "other"]
    data["evaluate"] = {"batch_size": 8, **evaluate}
    return data


def test_evaluate_dataset_must_be_prepared_and_instructions_need_it(tmp_path, archives):
    data = two_datasets(tmp_path, archives, dataset="other")
    with pytest.raises(RecpipeError, match=r"dataset 'other' is not among the prepared datasets \['ml-100k'\]"):
        parse({**data, "datasets": ["ml-100k"]})
    with pytest.raises(RecpipeError, match="params.yaml: evaluate: instructions: only with evaluate.dataset set"):
        parse(two_datasets(tmp_path, archives, instructions={"template": "tallrec"}))
    with pytest.raises(RecpipeError, match="evaluate.instructions: evaluate.dataset is the training dataset 'ml-100k'"):
        parse(two_datasets(tmp_path, archives, dataset="ml-100k", instructions={"like_threshold": 4}))
    p = parse(two_datasets(tmp_path, archives, dataset="other", instructions={"like_threshold": 4, "history_len": 5}))
    assert scored(p)[0] == "other" and scored(p)[1].like_threshold == 4
    assert scored(parse(two_datasets(tmp_path, archives))) == (
        "ml-100k",
        parse(two_datasets(tmp_path, archives)).instructions,
    )


def test_adapter_tuned_on_one_dataset_is_scored_on_the_others_test_split(tmp_path, archives, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = two_datasets(
        tmp_path, archives, dataset="other", instructions={"history_len": 4, "pool_size": 300, "like_threshold": 3.5}
    )
    data["model"] = {
        "name": str(
            make_tiny_model(
                tmp_path / "tiny",
                [
                    "### Instruction:\nYou are a movie recommender. Movies the user liked: disliked: ### Response:\nYes. No."
                ]
                * 20,
            )
        )
    }
    data["lora"] = {"rank": 2, "alpha": 4}
    data["train"] = {"epochs": 1, "batch_size": 4, "dtype": "float32"}
    p = parse(data)
    for name in p.datasets:
        for step in ("download", "ingest", "textualize"):
            STEPS[step].run(p, name)
    for step in ("instructions", "sample", "train", "evaluate_base", "evaluate", "report"):
        STEPS[step].run(p)
    # The other dataset's samples are built by the same code, with evaluate.instructions.
    cross = pl.read_parquet(paths.CROSS)
    assert cross.equals(build_instructions("data/text/other", tmp_path / "check.parquet", p.evaluate.instructions))
    assert all(len(h) == 4 for h in cross["history_item_ids"].to_list())
    # Training read ml-100k's shots only; the evaluations scored every test sample of `other`.
    own = pl.read_parquet(paths.SAMPLES)
    shots = pl.read_parquet(f"{paths.SHOTS}/train.parquet")
    assert set(shots["prompt"]) <= set(own.filter(pl.col("split") == "train")["prompt"])
    test = cross.filter(pl.col("split") == "test").sort("sample_id")
    for name in ("base", "tuned"):
        predicted = pl.read_parquet(f"{paths.EVAL}/{name}/predictions.parquet").sort("sample_id")
        assert predicted.select("sample_id", "user_id", "item_id", "label").equals(
            test.select("sample_id", "user_id", "item_id", "label")
        )
        assert json.loads((tmp_path / f"reports/{name}.json").read_text())["n"] == test.height
    report = (tmp_path / "reports/report.md").read_text()
    assert (
        "Cross-domain: trained on ml-100k, scored on the test split of other" in report
        and "liked if rating > 3.5" in report
    )
    # Back to in-domain: the cross-domain samples go, and the test split is ml-100k's again.
    p = parse(two_datasets(tmp_path, archives) | {"model": data["model"]})
    STEPS["instructions"].run(p)
    assert not (tmp_path / paths.CROSS).exists() and paths.test_samples(p.evaluate.dataset) == paths.SAMPLES


def test_a_template_with_other_answers_is_refused(tmp_path):
    from recpipe.tallrec.instructions import same_answers

    same_answers("tallrec", "tallrec-books")  # both answer Yes./No.
    odd = tmp_path / "odd.yaml"
    shipped = Path(paths.__file__).parents[1] / "templates" / "tallrec.yaml"
    odd.write_text(shipped.read_text().replace('answer_yes: "Yes."', 'answer_yes: "Sure."'))
    with pytest.raises(
        RecpipeError,
        match=r"evaluate.instructions.template '.*odd.yaml' answers 'Sure.'/'No.', but the model is trained on 'tallrec'",
    ):
        same_answers("tallrec", str(odd))
