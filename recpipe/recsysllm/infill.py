"""RecSysLLM's masked pretraining samples: GLM's autoregressive blank infilling over whole entities.

A text (a user's features and behaviour sequence, with the entity spans textualize keeps) becomes
two parts:
- part A, the corrupted text: each masked span replaced by one mask token ([MASK] for entity
  spans, [sMASK] for whole sentences, [gMASK] for the document's end);
- part B, the masked spans, each as [START] + its tokens + [END], in their original order
  (chronological) or shuffled (GLM's order, the ablation).
Part A sees itself in both directions and never part B; part B sees all of part A and is causal
within itself (attention_mask). The loss is on part B's span tokens and [END] only.

Each token has two positions (2D positions): the inter position, what the model's rotary
positions receive (a part-A token's index; a part-B token takes its span's mask position), and the
intra position for a learnable embedding: 0 for part-A tokens outside entities, 1, 2, ... over an
entity's tokens in part A; in part B 1, 2, ... over [START] and the span's first entity (or
token), restarting at 1 at each later one. At inference the entity boundaries of generated text
are not known in advance: a trie of every entity's tokens decides them token by token
(dynamic_intra), and gives the ids the training path gives the same text.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pygtrie
import torch

from recpipe import RecpipeError
from recpipe.model.train import IGNORE

MASKS = {"entity": "[MASK]", "sentence": "[sMASK]", "document": "[gMASK]"}
START, END = "[START]", "[END]"
SPECIAL_TOKENS = [*MASKS.values(), START, END]
SENTENCE_ENDS = (".", "!", "?")


@dataclass(frozen=True)
class InfillConfig:
    """How spans are chosen. objectives: weight of each kind of span (entity, sentence, document),
    one kind drawn per text; ratio: share of the text's units the entity and sentence spans cover;
    span_mean: Poisson mean of an entity span's length in units; document: the range of the share
    of tokens the document span covers; whole_entities: False masks single tokens (GLM's own
    masking, the ablation); order: chronological or random."""

    objectives: tuple[tuple[str, float], ...] = (("entity", 1.0),)
    ratio: float = 0.15
    span_mean: float = 3.0
    document: tuple[float, float] = (0.5, 1.0)
    whole_entities: bool = True
    order: str = "chronological"

    def __post_init__(self):
        kinds = dict(self.objectives)
        if unknown := sorted(set(kinds) - set(MASKS)):
            raise RecpipeError(f"recsysllm.objectives: unknown kind {unknown[0]!r} (kinds: {', '.join(MASKS)})")
        if any(w < 0 for w in kinds.values()) or sum(kinds.values()) <= 0:
            raise RecpipeError(f"recsysllm.objectives: weights must be >= 0 with a positive sum, got {kinds}")
        if not 0 < self.ratio < 1:
            raise RecpipeError(f"recsysllm.ratio: the share of the text to mask must lie in (0, 1), got {self.ratio}")
        lo, hi = self.document
        if not 0 < lo <= hi <= 1:
            raise RecpipeError(
                f"recsysllm.document: the span's share of the text must be a range within (0, 1], got [{lo}, {hi}]"
            )
        if self.order not in ("chronological", "random"):
            raise RecpipeError(f"recsysllm.order: {self.order!r} is not chronological or random")


def special_token_ids(tokenizer) -> dict[str, int]:
    """Add the five special tokens (once) and return their ids; the model's embeddings must then
    grow to len(tokenizer) (model.resize_token_embeddings)."""
    tokenizer.add_special_tokens({"extra_special_tokens": SPECIAL_TOKENS}, replace_extra_special_tokens=False)
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def outer_entities(text: str, spans: list[tuple[int, int]], where: str = "text") -> list[tuple[int, int]]:
    """The entities masked as wholes: spans not inside another (a movie's name holds its title and
    year: the name is the entity). Spans must lie inside the text and nest or stay apart."""
    for start, end in spans:
        if not 0 <= start < end <= len(text):
            raise RecpipeError(
                f"{where}: entity span ({start}, {end}) does not lie inside its text of {len(text)} characters"
            )
    ordered = sorted(set(spans), key=lambda s: (s[0], -s[1]))
    outer: list[tuple[int, int]] = []
    for start, end in ordered:
        if outer and start < outer[-1][1]:
            if end > outer[-1][1]:
                raise RecpipeError(f"{where}: entity spans {outer[-1]} and {(start, end)} overlap without nesting")
            continue
        outer.append((start, end))
    return outer


def units(
    offsets: list[tuple[int, int]], entities: list[tuple[int, int]], whole_entities: bool = True
) -> list[tuple[int, int, bool]]:
    """The text's tokens grouped into what a mask covers whole: (first token, end token, is an
    entity). An entity's tokens (every token that overlaps it) form one unit; any other token is a
    unit alone. A token that overlaps two entities joins them into one unit."""
    owner = []
    for start, end in offsets:
        hit = {i for i, (s, e) in enumerate(entities) if start < e and s < end}
        owner.append(hit)
    out: list[tuple[int, int, bool]] = []
    for j, hit in enumerate(owner):
        if whole_entities and hit and out and out[-1][2] and owner[j - 1] & hit:
            out[-1] = (out[-1][0], j + 1, True)
        else:
            out.append((j, j + 1, bool(hit)))
    return out


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _place(rng: random.Random, lengths: list[int], n: int) -> list[tuple[int, int]]:
    """Non-overlapping ranges of the given lengths over n slots, each arrangement equally likely,
    in slot order."""
    free = n - sum(lengths)
    picks = sorted(rng.sample(range(free + len(lengths)), len(lengths)))
    ranges, used = [], 0
    for i, (pick, length) in enumerate(zip(picks, lengths)):
        start = pick - i + used
        ranges.append((start, start + length))
        used += length
    return ranges


def entity_spans(rng: random.Random, n_units: int, ratio: float, mean: float) -> list[tuple[int, int]]:
    """GLM's span sampling counted in units: lengths from Poisson(mean) (at least 1) until about
    `ratio` of the units are covered, placed at random without overlap."""
    budget = max(1, round(ratio * n_units)) if n_units > 1 else 0
    lengths: list[int] = []
    while sum(lengths) < budget:
        lengths.append(min(max(1, _poisson(rng, mean)), budget - sum(lengths)))
    return _place(rng, lengths, n_units)


def sentences(tokens: list[str], parts: list[tuple[int, int, bool]]) -> list[tuple[int, int]]:
    """Unit ranges of the text's sentences: one ends after a unit outside entities whose text ends
    with . ! or ? (a title such as "Dr. Strangelove" never ends one)."""
    out, start = [], 0
    for i, (first, end, is_entity) in enumerate(parts):
        if not is_entity and "".join(tokens[first:end]).rstrip().endswith(SENTENCE_ENDS):
            out.append((start, i + 1))
            start = i + 1
    if start < len(parts):
        out.append((start, len(parts)))
    return out


def sentence_spans(
    rng: random.Random, sents: list[tuple[int, int]], ratio: float, n_units: int
) -> list[tuple[int, int]]:
    """Whole sentences, drawn at random until about `ratio` of the units are covered (at least
    one; never all of several)."""
    chosen, covered = [], 0
    for s in rng.sample(sents, len(sents)):
        if chosen and (covered >= ratio * n_units or len(chosen) == len(sents) - 1):
            break
        chosen.append(s)
        covered += s[1] - s[0]
    return sorted(chosen)


def document_span(
    rng: random.Random, parts: list[tuple[int, int, bool]], n_tokens: int, share: tuple[float, float]
) -> list[tuple[int, int]]:
    """One span over the text's end, covering a share of its tokens drawn uniformly from `share`,
    widened to the start of the unit it cuts."""
    keep = n_tokens - math.ceil(rng.uniform(*share) * n_tokens)
    first = next(i for i, (_, end, _) in enumerate(parts) if end > keep)
    return [(first, len(parts))]


def build(
    text: str,
    spans: list[tuple[int, int]],
    tokenizer,
    ids: dict[str, int],
    config: InfillConfig,
    rng: random.Random,
    where: str = "text",
) -> dict:
    """One pretraining sample of `text`: input_ids, labels, position_ids (inter), intra_ids and
    part_a (part A's length). `spans`: the text's entity character ranges; `ids`: special_token_ids."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tokens = [text[s:e] for s, e in enc.offset_mapping]
    entities = outer_entities(text, spans, where)
    entity_units = units(enc.offset_mapping, entities)
    intra = [0] * len(tokens)  # a token's place in its entity, whatever the masking unit
    for start, end, is_entity in entity_units:
        if is_entity:
            intra[start:end] = range(1, end - start + 1)
    parts = entity_units if config.whole_entities else units(enc.offset_mapping, entities, whole_entities=False)
    kinds, weights = zip(*config.objectives)
    kind = rng.choices(kinds, weights)[0]
    if kind == "entity":
        masked = entity_spans(rng, len(parts), config.ratio, config.span_mean)
    elif kind == "sentence":
        masked = sentence_spans(rng, sentences(tokens, parts), config.ratio, len(parts))
    else:
        masked = document_span(rng, parts, len(tokens), config.document)
    return assemble(
        enc.input_ids, parts, intra, masked, ids[MASKS[kind]], ids, rng if config.order == "random" else None
    )


def build_all(
    docs, tokenizer, ids: dict[str, int], config: InfillConfig, seed: int, copies: int = 1, where: str = "corpus"
) -> list[dict]:
    """Samples of every text of `docs` (rows of user_id, text, spans; recsysllm.corpus.documents),
    `copies` each with its own masks; each draw seeded by (seed, user, copy), so a sample does not
    depend on the other rows."""
    rows = []
    for i, (user, text, spans) in enumerate(docs.select("user_id", "text", "spans").iter_rows()):
        ranges = [(s["start"], s["end"]) for s in spans]
        for copy in range(copies):
            rows.append(
                build(
                    text,
                    ranges,
                    tokenizer,
                    ids,
                    config,
                    random.Random(f"{seed}:{user}:{copy}"),
                    f"{where} row {i} (user {user})",
                )
            )
    return rows


def assemble(
    token_ids: list[int],
    parts: list[tuple[int, int, bool]],
    intra: list[int],
    masked: list[tuple[int, int]],
    mask_id: int,
    ids: dict[str, int],
    shuffle: random.Random | None = None,
) -> dict:
    """Parts A and B of a text whose units `masked` (ranges of unit indices, in text order) are
    blanked with `mask_id`; the spans come in text order, or shuffled by `shuffle`."""
    a_ids, a_intra, mask_pos = [], [], []
    cursor = 0
    for first, last in [*masked, (len(parts), len(parts))]:
        for start, end, _ in parts[cursor:first]:
            a_ids += token_ids[start:end]
            a_intra += intra[start:end]
        if first < len(parts):
            mask_pos.append(len(a_ids))
            a_ids.append(mask_id)
            a_intra.append(0)
        cursor = last
    order = list(range(len(masked)))
    if shuffle is not None:
        shuffle.shuffle(order)
    b_ids, b_labels, b_pos, b_intra = [], [], [], []
    for i in order:
        first, last = masked[i]
        span = token_ids[parts[first][0] : parts[last - 1][1]]
        # [START] is 1 and the span's first unit counts on from it; each later unit (an entity, or
        # a token outside entities) restarts at 1; [END] counts on from the last.
        intra_b = [1, *range(2, parts[first][1] - parts[first][0] + 2)]
        for start, end, _ in parts[first + 1 : last]:
            intra_b += range(1, end - start + 1)
        piece = [ids[START], *span, ids[END]]
        b_ids += piece
        b_labels += [IGNORE, *span, ids[END]]  # the token before each predicts it (labels shift by one)
        b_pos += [mask_pos[i]] * len(piece)
        b_intra += [*intra_b, intra_b[-1] + 1]
    return {
        "input_ids": a_ids + b_ids,
        "labels": [IGNORE] * len(a_ids) + b_labels,
        "position_ids": list(range(len(a_ids))) + b_pos,
        "intra_ids": a_intra + b_intra,
        "part_a": len(a_ids),
    }


def attention_mask(part_a: list[int], lengths: list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (batch, 1, n, n) additive mask of a padded batch: 0 where a query may look, the dtype's
    minimum where not. Keys in part A: every real query; keys in part B: part-B queries at or after
    them; padding keys: none (a padding query sees part A, so that no row is empty)."""
    n = max(lengths)
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    rows = []
    for a, length in zip(part_a, lengths):
        allowed = (k < a) | ((k <= q) & (q >= a) & (k < length))
        rows.append(allowed)
    allowed = torch.stack(rows)[:, None]
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def collate(rows: list[dict], pad_id: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A padded batch of samples from `build`, with its 4D attention mask in `dtype`."""
    n = max(len(r["input_ids"]) for r in rows)

    def pad(key, value):
        return torch.tensor([r[key] + [value] * (n - len(r[key])) for r in rows])

    return {
        "input_ids": pad("input_ids", pad_id),
        "labels": pad("labels", IGNORE),
        "position_ids": pad("position_ids", 0),
        "intra_ids": pad("intra_ids", 0),
        "attention_mask": attention_mask([r["part_a"] for r in rows], [len(r["input_ids"]) for r in rows], dtype),
    }


class IntraEmbedding(torch.nn.Module):
    """The intra-position embedding added to the token embeddings; starts at zero, so that an
    untrained one leaves the model as it was. Ids past the table's end (a span longer than `size`
    tokens) share its last row."""

    def __init__(self, size: int, hidden: int):
        super().__init__()
        self.embedding = torch.nn.Embedding(size, hidden)
        torch.nn.init.zeros_(self.embedding.weight)

    def forward(self, intra_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(intra_ids.clamp(max=self.embedding.num_embeddings - 1))


def infill_forward(
    model,
    batch: dict[str, torch.Tensor],
    intra: IntraEmbedding | None = None,
    cache=None,
    logits_to_keep: int | torch.Tensor = 0,
):
    """The model's output on a collated batch: its own rotary positions take the inter positions,
    the intra embedding (None: 2D positions off) is added to the token embeddings. `cache`: a
    transformers Cache to extend (generation); logits_to_keep: the positions that need logits
    (0: all)."""
    embeds = model.get_input_embeddings()(batch["input_ids"])
    if intra is not None:
        embeds = embeds + intra(batch["intra_ids"]).to(embeds.dtype)
    mask = batch["attention_mask"]
    if mask.dtype != embeds.dtype:  # blocked entries must hold this dtype's own minimum
        mask = torch.zeros_like(mask, dtype=embeds.dtype).masked_fill(mask < 0, torch.finfo(embeds.dtype).min)
    return model(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=batch["position_ids"],
        cache=cache,
        use_cache=cache is not None,
        logits_to_keep=logits_to_keep,
    )


def entity_trie(texts, tokenizer) -> pygtrie.Trie:
    """The entity pool: every entity's tokens as they appear in `texts` ((text, entity spans)
    pairs), the units `build` masks whole."""
    trie = pygtrie.Trie()
    for text, spans in texts:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for start, end, is_entity in units(enc.offset_mapping, outer_entities(text, spans)):
            if is_entity:
                trie[tuple(enc.input_ids[start:end])] = True
    return trie


def dynamic_intra(tokens: list[int], trie: pygtrie.Trie) -> list[int]:
    """Intra ids of [START] followed by generated `tokens`: [START] is 1 and the first token counts
    on; a token that continues the entity in progress (its path in the trie) counts on, any other
    restarts at 1 (and begins an entity if one starts with it)."""
    out, path = [1], ()
    for i, token in enumerate(tokens):
        if path and trie.has_node(path + (token,)):
            path += (token,)
            out.append(out[-1] + 1)
        else:
            path = (token,) if trie.has_node((token,)) else ()
            out.append(out[-1] + 1 if i == 0 else 1)
    return out


@torch.no_grad()
def fill_blank(
    model,
    part_a: dict,
    mask_position: int,
    trie: pygtrie.Trie,
    ids: dict[str, int],
    intra: IntraEmbedding | None = None,
    max_new_tokens: int = 32,
) -> tuple[list[int], list[int]]:
    """Greedy infilling of the blank at `mask_position` of part A (its input_ids and intra_ids):
    the generated tokens up to [END], and the intra id each was given (dynamic_intra, decided token
    by token as it is generated, with the model's cache)."""
    from transformers import DynamicCache

    a = len(part_a["input_ids"])
    prompt = {
        "input_ids": torch.tensor([[*part_a["input_ids"], ids[START]]]),
        "position_ids": torch.tensor([[*range(a), mask_position]]),
        "intra_ids": torch.tensor([[*part_a["intra_ids"], 1]]),
        "attention_mask": attention_mask([a], [a + 1]),
    }
    cache = DynamicCache(config=model.config)
    logits = infill_forward(model, prompt, intra, cache).logits
    tokens: list[int] = []
    while len(tokens) < max_new_tokens and (token := int(logits[0, -1].float().argmax())) != ids[END]:
        tokens.append(token)
        step = {
            "input_ids": torch.tensor([[token]]),
            "position_ids": torch.tensor([[mask_position]]),
            "intra_ids": torch.tensor([[dynamic_intra(tokens, trie)[-1]]]),
            "attention_mask": torch.zeros(1, 1, 1, a + 1 + len(tokens)),  # a part-B token sees all before it
        }
        logits = infill_forward(model, step, intra, cache).logits
    return tokens, dynamic_intra(tokens, trie)
