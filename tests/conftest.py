"""Small synthetic MovieLens-style data in both raw formats, generated per test session."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest

from recpipe.data.formats import ML100K_GENRES
from recpipe.io import sha256_file

N_USERS, N_ITEMS, PER_USER = 30, 60, 25
TITLES = ["House of Yes, The", "Dr. No", "Usual Suspects, The", "Blue Angel, The (Blaue Engel, Der)", "Heat"]


def make_ratings(seed: int = 0) -> tuple[list, list, list]:
    rng = random.Random(seed)
    ratings = []
    for u in range(1, N_USERS + 1):
        t = 880_000_000 + rng.randrange(10_000)
        for i in rng.sample(range(1, N_ITEMS + 1), PER_USER):
            t += rng.choice([0, 0, 5, 60])  # many same-second ties, as in ML-100K
            ratings.append((u, i, rng.randint(1, 5), t))
    rng.shuffle(ratings)
    items = []
    for i in range(1, N_ITEMS + 1):
        title = TITLES[i % len(TITLES)] + f" {i}" if i > len(TITLES) else TITLES[i - 1]
        flags = [0] * len(ML100K_GENRES)
        flags[1 + i % 18] = 1
        items.append((i, title, 1990 + i % 9, flags))
    users = [(u, 20 + u, "MF"[u % 2], "engineer", f"{10000 + u}") for u in range(1, N_USERS + 1)]
    return ratings, items, users


def grouplens_files(ratings, items, users) -> dict[str, bytes]:
    data = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings)
    item = "".join(
        f"{i}|{title} ({year})|01-Jan-{year}||http://x|" + "|".join(map(str, flags)) + "\n"
        for i, title, year, flags in items
    )
    user = "".join(f"{u}|{a}|{g}|{o}|{z}\n" for u, a, g, o, z in users)
    return {"ml-100k/u.data": data.encode(), "ml-100k/u.item": item.encode("latin-1"), "ml-100k/u.user": user.encode()}


def atomic_files(ratings, items, users) -> dict[str, bytes]:
    base = "recbole/dataset_example/ml-100k/ml-100k"
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings
    )
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
        f"{i}\t{title}\t{year}\t" + " ".join(g for g, f in zip(ML100K_GENRES, flags) if f) + "\n"
        for i, title, year, flags in items
    )
    user = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + "".join(
        f"{u}\t{a}\t{g}\t{o}\t{z}\n" for u, a, g, o, z in users
    )
    return {f"{base}.inter": inter.encode(), f"{base}.item": item.encode(), f"{base}.user": user.encode()}


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


GROUPLENS_MEMBERS = {"interactions": "ml-100k/u.data", "items": "ml-100k/u.item", "users": "ml-100k/u.user"}
ATOMIC_MEMBERS = {
    "interactions": "recbole/dataset_example/ml-100k/ml-100k.inter",
    "items": "recbole/dataset_example/ml-100k/ml-100k.item",
    "users": "recbole/dataset_example/ml-100k/ml-100k.user",
}


@pytest.fixture(scope="session")
def archives(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("archives")
    tables = make_ratings()
    return {
        "grouplens": write_zip(d / "ml-100k.zip", grouplens_files(*tables)),
        "atomic": write_zip(d / "recbole-fake.whl", atomic_files(*tables)),
    }


def source(kind: str, path: Path, **overrides) -> dict:
    base = {
        "grouplens": {"name": "grouplens", "format": "grouplens", "encoding": "latin-1", "members": GROUPLENS_MEMBERS},
        "atomic": {"name": "wheel", "format": "atomic", "members": ATOMIC_MEMBERS},
    }[kind]
    return {**base, "url": path.as_uri(), "sha256": sha256_file(path) if path.exists() else None, **overrides}


def params_dict(sources: list[dict], **sections) -> dict:
    """params.yaml's keys, with the dataset registry (datasets.yaml's content) under `registry`."""
    data = {
        "seed": 0,
        "datasets": ["ml-100k"],
        "dataset": "ml-100k",
        "registry": {"ml-100k": {"sources": sources}},
        "textualize": {"article_first": True},
        "instructions": {"template": "tallrec", "pool_size": 300, "history_len": 5},
        "sample": {"k": 16, "valid_size": 10},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return data


def make_tiny_model(folder: Path, texts: list[str]) -> Path:
    """A tiny random Llama and a byte-level BPE tokenizer trained here on `texts`: no downloads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"]
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
