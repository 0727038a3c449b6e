"""Intra positions when fine-tuning and scoring a model pretrained with 2D positions
(recsysllm.dynamic_positions).

A TALLRec or P5 prompt and its answer carry no entity spans of their own (a test prompt records
none, and a generated answer has none until it is written), so the entity trie decides every
token's intra id, left to right, with part A's rule: a token that continues the entity in progress
counts on, one that begins an entity is 1, any other 0. Training computes the ids over prompt +
answer at once (running_intra); inference computes the prompt's, then one more per token it writes
(advance, carrying the state): the same text gets the same ids both ways. On a text whose other
tokens begin no entity, they are the ids pretraining's part A took from the entity spans.

Switched off, or on a model without an intra embedding (pretrained without 2D positions, or the
base model), nothing is added: the model runs exactly as a plain one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pygtrie

from recpipe import RecpipeError
from recpipe.io import read_parquet
from recpipe.recsysllm.infill import IntraEmbedding, entity_trie

State = tuple[tuple[int, ...], int]  # (the entity's tokens so far, the last token's intra id)
OUTSIDE: State = ((), 0)


def advance(trie: pygtrie.Trie, state: State, token: int) -> State:
    """The state after `token`: it continues the entity in progress, begins one, or lies outside."""
    path, last = state
    if path and trie.has_node(path + (token,)):
        return path + (token,), last + 1
    if trie.has_node((token,)):
        return (token,), 1
    return OUTSIDE


def running_intra(tokens: list[int], trie: pygtrie.Trie, state: State = OUTSIDE) -> tuple[list[int], State]:
    """The intra id of each token of `tokens` after `state`, and the state after the last."""
    ids = []
    for token in tokens:
        state = advance(trie, state, token)
        ids.append(state[1])
    return ids, state


@dataclass(frozen=True)
class Positions:
    """The entity trie and the model's intra embedding: what scoring and training need to add the
    intra positions (recpipe.model.decoding.model_inputs)."""

    trie: pygtrie.Trie
    embedding: IntraEmbedding

    def run(self, tokens: list[int], state: State = OUTSIDE) -> tuple[list[int], State]:
        """running_intra with this trie."""
        return running_intra(tokens, self.trie, state)


class EntityPositions:
    """(model, tokenizer) -> Positions, or None for a model without an intra embedding. The trie
    holds the entities of the pretraining corpus (recsysllm.pretrain.corpus: every user's
    features and sampled behaviour), built once per tokenizer."""

    def __init__(self, corpus_path):
        self.corpus_path = Path(corpus_path)
        self._tries: dict[int, pygtrie.Trie] = {}

    def __call__(self, model, tokenizer) -> Positions | None:
        from recpipe.recsysllm.pretrain import intra_module

        embedding = intra_module(model)
        if embedding is None:
            return None
        if id(tokenizer) not in self._tries:
            if not self.corpus_path.is_file():
                raise RecpipeError(
                    f"recsysllm.dynamic_positions: no pretraining corpus at {self.corpus_path} to take the entities from (run the pretrain stage)"
                )
            docs = read_parquet(self.corpus_path, "pretrain", columns=["text", "spans"])
            pool = [(text, [(s["start"], s["end"]) for s in spans]) for text, spans in docs.iter_rows()]
            self._tries[id(tokenizer)] = entity_trie(pool, tokenizer)
        return Positions(self._tries[id(tokenizer)], embedding)
