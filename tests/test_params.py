from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from conftest import params_dict, source
from recpipe import RecpipeError
from recpipe.cli import STEPS
from recpipe.params import schema as params
from recpipe.params.core import REGISTRY, TOP_LEVEL, models_in
from recpipe.params.registry import DatasetParams, RemoteFile

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_load(archives):
    p = params.parse(params_dict([source("atomic", archives["atomic"])]))
    assert p.sample.k == 16 and p.instructions.history_len == 5 and p.instructions.split == "temporal"


def test_repo_params_file_is_valid():
    p = params.load(ROOT / "params.yaml")
    assert [s.name for s in p.registry["ml-100k"].sources] == ["grouplens", "recbole-wheel"]
    assert set(p.registry) == set(yaml.safe_load((ROOT / "datasets.yaml").read_text()))


@pytest.mark.parametrize(
    "section, key, hint",
    [("sample", "kk", "'k'"), ("instructions", "histroy_len", "'history_len'"), ("textualize", "zzz", None)],
)
def test_misspelled_key_is_an_error(archives, section, key, hint):
    data = params_dict([source("atomic", archives["atomic"])], **{section: {key: 1}})
    with pytest.raises(RecpipeError) as e:
        params.parse(data)
    assert f"{section}.{key}: unknown key" in str(e.value)
    if hint:
        assert f"did you mean {hint}" in str(e.value)


def test_misspelled_top_level_and_nested_source_key(archives):
    data = params_dict([{**source("atomic", archives["atomic"]), "sha265": "x"}])
    data["sede"] = 1
    with pytest.raises(RecpipeError) as e:
        params.parse(data)
    assert "sede: unknown key (did you mean 'seed'?)" in str(e.value)
    assert "sources.0.sha265: unknown key (did you mean 'sha256'?)" in str(e.value)


def test_bad_values_name_the_parameter(archives):
    with pytest.raises(RecpipeError, match=r"sample.k: Input should be greater than or equal to 1"):
        params.parse(params_dict([source("atomic", archives["atomic"])], sample={"k": 0}))
    with pytest.raises(RecpipeError, match="fractions"):
        params.parse(params_dict([source("atomic", archives["atomic"])], instructions={"fractions": [0.5, 0.5, 0.5]}))
    with pytest.raises(RecpipeError, match="not found"):
        params.load("does-not-exist.yaml")


def test_early_stopping_needs_evaluations(archives):
    src = [source("atomic", archives["atomic"])]
    with pytest.raises(RecpipeError, match=r"params.yaml: train: patience counts evaluations: set eval_steps too"):
        params.parse(params_dict(src, train={"patience": 10}))
    with pytest.raises(RecpipeError, match=r"p5.train: save_steps \(15\) must be a multiple of eval_steps \(10\)"):
        params.parse(params_dict(src, p5={"train": {"eval_steps": 10, "save_steps": 15}}))
    assert (
        params.parse(params_dict(src, train={"eval_steps": 10, "patience": 10, "save_steps": 20})).train.patience == 10
    )


def test_params_yaml_renders_the_defaults():
    """params.yaml lists every key with exactly the models' defaults (and nothing else): the two
    cannot drift apart."""
    defaults = params.Params.model_construct().model_dump(mode="json")
    assert yaml.safe_load((ROOT / "params.yaml").read_text()) == defaults
    assert params.load(ROOT / "params.yaml").model_dump(mode="json") == defaults


def models(model: type[BaseModel] = params.Params) -> set[type[BaseModel]]:
    found = {model}
    for field in model.model_fields.values():
        for sub in models_in(field.annotation):
            found |= models(sub)
    return found


def test_every_field_has_a_one_line_description():
    assert DatasetParams in models() and RemoteFile in models()
    for model in models():
        for name, field in model.model_fields.items():
            assert field.description and "\n" not in field.description, f"{model.__name__}.{name}"


def write(tmp_path, params_text: str, datasets_text: str | None) -> Path:
    (tmp_path / "params.yaml").write_text(params_text)
    if datasets_text is not None:
        (tmp_path / "datasets.yaml").write_text(datasets_text)
    return tmp_path / "params.yaml"


ENTRY = "ml-100k: {sources: [{name: w, pip: recbole==1.2.1, sha256: %s, format: atomic, members: {interactions: x}}]}\n"
HEX = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"


def test_registry_is_read_from_the_file_next_to_params(tmp_path):
    p = params.load(write(tmp_path, "seed: 3\n", ENTRY % HEX))
    assert p.seed == 3 and p.registry["ml-100k"].sources[0].sha256 == HEX
    (tmp_path / "alone").mkdir()
    with pytest.raises(RecpipeError, match=r"alone/datasets.yaml: dataset registry file not found"):
        params.load(write(tmp_path / "alone", "seed: 0\n", None))


def test_registry_errors_name_the_registry_file(tmp_path):
    with pytest.raises(RecpipeError) as e:
        params.load(write(tmp_path, "datasets: [ml-100k, nope]\n", ENTRY % HEX))
    assert f"{tmp_path / 'params.yaml'}: dataset 'nope' has no entry in {tmp_path / 'datasets.yaml'}" in str(e.value)
    with pytest.raises(RecpipeError) as e:
        params.load(write(tmp_path, "seed: 0\n", ENTRY.replace("format", "fromat") % HEX))
    assert f"{tmp_path / 'datasets.yaml'}: ml-100k.sources.0.fromat: unknown key (did you mean 'format'?)" in str(
        e.value
    )
    with pytest.raises(
        RecpipeError, match=r"params.yaml: download: unknown key \(the dataset registry is datasets.yaml"
    ):
        params.load(write(tmp_path, "download: {datasets: {}}\n", ENTRY % HEX))
    with pytest.raises(
        RecpipeError, match=r"params.yaml: registry: unknown key \(the dataset registry is read from .*datasets.yaml\)"
    ):
        params.load(write(tmp_path, "registry: {}\n", ENTRY % HEX))


@pytest.mark.parametrize("value", ["1" * 64, "0" + "1" * 63, "123", "12.5"])
def test_unquoted_digits_as_sha256_is_one_clear_error(tmp_path, value):
    with pytest.raises(RecpipeError) as e:
        params.load(write(tmp_path, "seed: 0\n", ENTRY % value))
    assert (
        str(e.value)
        == f"{tmp_path / 'datasets.yaml'}: ml-100k.sources.0.sha256: must be a quoted string of 64 hex digits (YAML reads unquoted digits as a number: put the checksum in quotes)"
    )
    with pytest.raises(
        RecpipeError, match=r"params.yaml: model.sha256: must be a quoted string of 64 hex digits \(YAML reads"
    ):
        params.load(write(tmp_path, f"model: {{name: x, sha256: {value}}}\n", ENTRY % HEX))


@pytest.mark.parametrize("value", ["'123'", "abc", HEX + "0", HEX[:-1] + "g"])
def test_sha256_must_be_64_hex_digits(tmp_path, value):
    with pytest.raises(
        RecpipeError, match=r"datasets.yaml: ml-100k.sources.0.sha256: must be a quoted string of 64 hex digits, got '"
    ):
        params.load(write(tmp_path, "seed: 0\n", ENTRY % value))
    files = "ml-100k: {sources: [{name: f, format: amazon, files: {items: {url: x, sha256: VALUE}}}]}\n"
    files = files.replace("VALUE", value)
    with pytest.raises(
        RecpipeError, match=r"ml-100k.sources.0.files.items.sha256: must be a quoted string of 64 hex digits"
    ):
        params.load(write(tmp_path, "seed: 0\n", files))
    assert (
        params.load(write(tmp_path, "seed: 0\n", ENTRY % f"'{HEX.upper()}'")).registry["ml-100k"].sources[0].sha256
        == HEX.upper()
    )


def test_the_top_level_keys_are_the_whole_files_sections():
    assert list(TOP_LEVEL) == [key for key in params.Params.model_fields if key != REGISTRY]


@pytest.mark.parametrize("name", sorted(STEPS))
def test_each_step_reads_its_sections_as_the_whole_file_declares_them(name):
    """A step's own params model holds whole sections, each declared exactly as in the whole file's
    model (same type, default and description), so a stage reads what `recpipe params` documents."""
    fields = STEPS[name].StepParams.model_fields
    whole = params.Params.model_fields
    assert set(fields) <= set(whole), sorted(set(fields) - set(whole))
    for key, field in fields.items():
        assert repr(field) == repr(whole[key]), key


def test_a_step_checks_only_the_sections_it_reads(tmp_path, archives):
    """A bad value in a section the sample step does not read stops the whole file's load, not the
    sample step's; a bad value in its own section stops both."""
    from recpipe.params.core import load
    from recpipe.steps import sample

    data = params_dict([source("atomic", archives["atomic"])], p5={"k": "many"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in data.items() if k != REGISTRY}))
    (tmp_path / "datasets.yaml").write_text(yaml.safe_dump(data[REGISTRY]))
    assert load(sample.StepParams, tmp_path / "params.yaml").sample.k == 16
    with pytest.raises(RecpipeError, match=r"params.yaml: p5.k: Input should be a valid integer"):
        params.load(tmp_path / "params.yaml")
    data["sample"] = {"k": 0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in data.items() if k != REGISTRY}))
    with pytest.raises(RecpipeError, match=r"params.yaml: sample.k: Input should be greater than or equal to 1"):
        load(sample.StepParams, tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("sede: 1\n")
    with pytest.raises(RecpipeError, match=r"params.yaml: sede: unknown key \(did you mean 'seed'\?\)"):
        load(sample.StepParams, tmp_path / "params.yaml")
