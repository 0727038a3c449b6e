import pytest
from conftest import params_dict, source

from recpipe import RecpipeError, params


def test_defaults_load(archives):
    p = params.parse(params_dict([source("atomic", archives["atomic"])]))
    assert p.sample.k == 16 and p.instructions.history_len == 5 and p.instructions.split == "temporal"


def test_repo_params_file_is_valid():
    p = params.load("params.yaml")
    assert [s.name for s in p.download.datasets["ml-100k"].sources] == ["grouplens", "recbole-wheel"]


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
