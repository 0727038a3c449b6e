"""What the train and evaluate steps share when the TALLRec model gets collaborative tokens
(collab.model mf or sasrec): the encoders' vectors of each sample, and the samples with their
hybrid prompts."""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recpipe.steps.paths import COLLAB_DATA, dataset_dir

ENCODER_FOLDERS = {"mf": "mf", "sasrec": "sasrec"}  # collab.model -> its folder in data/collab/<dataset>


def cf_vectors(p, dataset: str):
    """samples -> one float32 [tokens, dim] tensor per sample, in the order of its hybrid prompt's
    tokens: the user's (its embedding, or SASRec's encoding of the prompt's history), then each
    item token's item. `p`: a step's params with the collab section."""
    import torch

    from recpipe.collab.encoders import load_encoder

    encoder = load_encoder(f"{dataset_dir(COLLAB_DATA, dataset)}/{ENCODER_FOLDERS[p.collab.model]}")
    with_user = "user" in p.collab.tokens

    def vectors(samples) -> list:
        users = samples["user_id"].to_list()
        user = encoder.user_vectors(users, samples["history_item_ids"].to_list()) if with_user else None
        out = []
        for i, ids in enumerate(samples["collab_item_ids"].to_list()):
            parts = [user[i : i + 1]] if user is not None else []
            out.append(torch.cat([*parts, encoder.item_vectors(ids)]))
        return out

    return vectors


@contextmanager
def hybrid(*paths: str) -> Iterator[list[str]]:
    """Copies of samples files whose `prompt` is their hybrid prompt, in a temporary folder."""
    from recpipe import RecpipeError
    from recpipe.io import read_parquet, write_parquet

    with tempfile.TemporaryDirectory(prefix="recpipe-hybrid-") as folder:
        copies = []
        for i, path in enumerate(paths):
            samples = read_parquet(path, "instructions")
            if "collab_prompt" not in samples.columns:
                raise RecpipeError(f"{path}: no hybrid prompts: rerun the instructions stage with collab.model set")
            copy = Path(folder) / f"{i}-{Path(path).name}"
            write_parquet(samples.with_columns(prompt=samples["collab_prompt"]), copy)
            copies.append(str(copy))
        yield copies
