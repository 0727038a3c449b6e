import hashlib
from pathlib import Path

import polars as pl
import pytest

from conftest import params_dict, source
from recpipe import RecpipeError
from recpipe.data.download import download
from recpipe.data.ingest import ingest
from recpipe.data.textualize import article_first, textualize
from recpipe.params.schema import parse
from recpipe.tallrec.instructions import instructions
from recpipe.tallrec.sample import sample
from recpipe.templates import load_template


def run_data_stages(archive_path: Path, root: Path, **sections):
    p = parse(params_dict([source("atomic", archive_path)], **sections))
    download(p.dataset, p.registry[p.dataset], root / "raw")
    ingest(root / "raw", root / "tables")
    textualize(root / "tables", root / "text", template="ml-100k", move_article=p.textualize.article_first)
    samples = instructions(root / "text", root / "instructions" / "samples.parquet", p.instructions)
    sample(root / "instructions" / "samples.parquet", root / "sample", p.sample, p.seed)
    return samples


@pytest.fixture(scope="module")
def built(archives, tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    return root, run_data_stages(archives["atomic"], root)


def test_article_moves_to_front():
    assert article_first("Usual Suspects, The") == "The Usual Suspects"
    assert article_first("Blue Angel, The (Blaue Engel, Der)") == "The Blue Angel (Blaue Engel, Der)"
    assert article_first("Good, The Bad and The Ugly, The") == "The Good, The Bad and The Ugly"
    assert article_first("Heat") == "Heat"


def test_spans_point_at_their_entities(built):
    root, _ = built
    items = pl.read_parquet(root / "text" / "items.parquet")
    row = items.filter(pl.col("item_id") == 3).row(0, named=True)
    got = {(s["entity"], row["text"][s["start"] : s["end"]]) for s in row["spans"]}
    assert ("title", "The Usual Suspects") in got and ("year", "1993") in got and ("name", row["name"]) in got
    assert all(e == "genres" for e, v in got if v == "Documentary")
    users = pl.read_parquet(root / "text" / "users.parquet").row(0, named=True)
    assert {users["text"][s["start"] : s["end"]] for s in users["spans"]} >= {"21", "woman", "engineer"}


def test_histories_are_chronological_with_file_order_tie_break(built):
    root, _ = built
    hist = pl.read_parquet(root / "text" / "histories.parquet")
    for rows, stamps in zip(hist["row"].to_list(), hist["timestamp"].to_list()):
        assert list(zip(stamps, rows)) == sorted(zip(stamps, rows))
    assert any(len(set(t)) < len(t) for t in hist["timestamp"].to_list())  # the fixture has ties


def test_temporal_split_is_strictly_ordered_and_sized(built):
    _, samples = built
    assert samples.height <= 300
    last_train = samples.filter(pl.col("split") == "train")["timestamp"].max()
    first_valid = samples.filter(pl.col("split") == "valid")["timestamp"].min()
    last_valid = samples.filter(pl.col("split") == "valid")["timestamp"].max()
    first_test = samples.filter(pl.col("split") == "test")["timestamp"].min()
    assert last_train < first_valid <= last_valid < first_test


def test_no_test_target_is_a_training_target(built):
    _, samples = built
    test = samples.filter(pl.col("split") == "test").select("user_id", "item_id")
    train = samples.filter(pl.col("split") != "test").select("user_id", "item_id")
    assert test.join(train, on=["user_id", "item_id"], how="semi").height == 0
    assert samples["sample_id"].n_unique() == samples.height


def test_re_rated_pairs_are_dropped_from_training():
    from recpipe.tallrec.instructions import drop_leaks

    df = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [7, 7, 8], "split": ["train", "test", "train"]})
    assert drop_leaks(df).sort("split").to_dicts() == [
        {"user_id": 1, "item_id": 7, "split": "test"},
        {"user_id": 2, "item_id": 8, "split": "train"},
    ]


def test_prompt_shape_and_answer_words_in_titles(built):
    root, samples = built
    row = samples.filter(pl.col("item_id") == 1).row(0, named=True)  # "House of Yes, The"
    assert '"The House of Yes (1991)"' in row["prompt"]
    assert row["prompt"].endswith("### Response:\n")
    assert row["answer"] == ("Yes." if row["label"] == 1 else "No.")
    assert row["label"] == int(row["rating"] > 3)
    assert all(len(h) == 5 for h in samples["history_item_ids"].to_list())


def test_paper_split_takes_the_last_users_in_file_order(archives, tmp_path):
    samples = run_data_stages(archives["atomic"], tmp_path, instructions={"split": "paper", "pool_size": 100})
    assert samples.group_by("split").len().sort("split").rows() == [("test", 10), ("train", 80), ("valid", 10)]


def test_k_shot_balanced_and_k_too_large(built, archives, tmp_path):
    root, _ = built
    train = pl.read_parquet(root / "sample" / "train.parquet")
    assert train.height == 16 and train["label"].sum() == 8
    assert set(train["split"]) == {"train"}
    with pytest.raises(RecpipeError, match=r"sample.k=5000 .* larger than its pool of \d+ samples"):
        run_data_stages(archives["atomic"], tmp_path, sample={"k": 5000})
    assert not (tmp_path / "sample").exists()


def test_template_missing_placeholder(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'item: "{name}"\ninput: "{liked} {target}"\nprompt: "{instruction}{input}"\ninstruction: x\nanswer_yes: Y\nanswer_no: N\n'
    )
    from recpipe.tallrec.instructions import REQUIRED

    with pytest.raises(RecpipeError, match=r"bad.yaml: 'input' lacks placeholders \['disliked'\]"):
        load_template(str(bad), REQUIRED)


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_params_same_bytes_and_seed_matters(archives, tmp_path):
    run_data_stages(archives["atomic"], tmp_path / "a")
    run_data_stages(archives["atomic"], tmp_path / "b")
    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert a == b and len(a) >= 10
    p = params_dict([source("atomic", archives["atomic"])])
    p["seed"] = 1
    pp = parse(p)
    sample(tmp_path / "a" / "instructions" / "samples.parquet", tmp_path / "s1", pp.sample, pp.seed)
    assert digest(tmp_path / "s1")["train.parquet"] != a["sample/train.parquet"]


def test_k_null_takes_every_training_sample_in_a_seeded_order(built):
    from recpipe.params.sample import SampleParams
    from recpipe.tallrec.sample import k_shot

    root, _ = built
    train = pl.read_parquet(root / "instructions" / "samples.parquet").filter(pl.col("split") == "train")
    every = k_shot(train, SampleParams(k=None), seed=3)
    assert sorted(every["sample_id"]) == sorted(train["sample_id"]) and every.height == train.height
    assert every.equals(k_shot(train, SampleParams(k=None), seed=3))
    assert not every.equals(k_shot(train, SampleParams(k=None), seed=4))
