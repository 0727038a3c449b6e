"""Hub ids in model.name: a missing or unreachable model fails at once, in one line, naming model.name;
a cached or reachable one resolves as before. No test here touches the network."""

import time

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
