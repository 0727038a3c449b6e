"""Generative recommendation: the model writes an item's name, and beam search is constrained by a
trie of every item's tokens so that it can only write real items. Instead, every candidate can
be scored exactly (likelihood_ranking): a direct prompt's list, or every item a user has not
rated for a sequential prompt (recpipe.p5.evaluate.rank). Also the free (unconstrained) way, matched
to items after the fact, and the ranking metrics HR@k and NDCG@k."""

from __future__ import annotations

import copy
import sys

import torch
from tqdm import tqdm
from transformers import DynamicCache

from recpipe import RecpipeError
from recpipe.templates import in_text


def name_tokens(tokenizer, name: str) -> list[int]:
    """An item name's token ids, the one form every part of P5 writes and reads: the name after a
    space (recpipe.templates.in_text), as an answer follows its prompt and as the name stands in a
    prompt's item list. Training targets and history spans, the decoding trie and likelihood
    scoring all see these tokens."""
    return tokenizer(in_text(name), add_special_tokens=False).input_ids


class ItemTrie:
    """Every item's name as the token ids the model must write (name_tokens, the tokens training
    teaches), ended by EOS.

    Each prefix knows its next tokens and how many items lie below it, so that `without(items)`
    is a cheap view for one prompt: a prefix stays allowed only while some item that is not
    excluded lies below it, and the search can never complete an excluded item (a user's history)."""

    def __init__(self, names: dict[int, str], tokenizer):
        self.end = tokenizer.eos_token_id
        self.named: dict[tuple[int, ...], list[int]] = {}  # a whole key (name + EOS) -> its items
        self.key_of: dict[int, tuple[int, ...]] = {}
        self.children: dict[tuple[int, ...], list[int]] = {}  # prefix -> the tokens that may follow it
        self.below: dict[tuple[int, ...], int] = {}  # prefix -> how many items lie at or below it
        for item_id, name in names.items():
            key = tuple(name_tokens(tokenizer, name)) + (self.end,)
            self.key_of[item_id] = key
            for n in range(len(key)):
                if key[: n + 1] not in self.below:
                    self.children.setdefault(key[:n], []).append(key[n])
                    self.below[key[: n + 1]] = 0
            self.named.setdefault(key, []).append(item_id)  # two items with the same name are one answer
            for n in range(len(key) + 1):
                self.below[key[:n]] = self.below.get(key[:n], 0) + 1
        if not self.named:
            raise RecpipeError("no items to build the decoding trie from")
        self.max_len = max(len(key) for key in self.named)
        self.excluded: frozenset[int] = frozenset()
        self.removed: dict[tuple[int, ...], int] = {}  # prefix -> how many excluded items lie below it

    def without(self, items) -> ItemTrie:
        """A view of this trie for one prompt that never writes `items` (ids it does not hold are
        ignored): it shares the trie's tables and only counts, per prefix of an excluded item's
        key, how many excluded items lie below it."""
        view = copy.copy(self)
        view.excluded = frozenset(i for i in items if i in self.key_of) | self.excluded
        view.removed = {}
        for item in view.excluded:
            key = self.key_of[item]
            for n in range(len(key) + 1):
                view.removed[key[:n]] = view.removed.get(key[:n], 0) + 1
        return view

    def next_tokens(self, prefix: tuple[int, ...]) -> list[int]:
        """The tokens that may follow `prefix` on the way to some item's name that is not
        excluded ([] if none)."""
        children = self.children.get(tuple(prefix), [])
        if not self.removed:
            return children
        return [t for t in children if self.below[(*prefix, t)] > self.removed.get((*prefix, t), 0)]

    def items(self, tokens: tuple[int, ...]) -> list[int]:
        """The item ids a finished token sequence names, excluded ones left out ([] if none)."""
        return [i for i in self.named.get(tuple(tokens), []) if i not in self.excluded]


def _batches(prompts: list[str], size: int):
    for start in range(0, len(prompts), size):
        yield start, prompts[start : start + size]


def _encode_left_padded(tokenizer, prompts: list[str], device):
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    return enc.input_ids.to(device), enc.attention_mask.to(device)


def left_padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows, as generate() numbers them: each row's first real token
    is 0, and its padding 0 too."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def length_batches(lengths: list[int], size: int, desc: str):
    """The indices of `lengths`, shortest first (similar lengths: little padding), equal lengths in
    index order, `size` at a time, with a progress bar over them. The batches depend on the lengths
    and their order only: the same prompts in the same order are always batched alike."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    with tqdm(total=len(order), desc=desc, unit="prompt", file=sys.stderr) as bar:
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            yield idx
            bar.update(len(idx))


def shared_prefix_length(rows: list[list[int]] | torch.Tensor, limit: int | None = None) -> int:
    """How many leading tokens every row has in common (at most `limit`): rows of token ids, as
    lists or as a 2-D tensor (a padded batch)."""
    if isinstance(rows, torch.Tensor):
        rows = rows[:, :limit].tolist()
    n = min((len(r) for r in rows), default=0)
    n = n if limit is None else min(n, limit)
    for r in rows[1:]:
        n = next((i for i in range(n) if r[i] != rows[0][i]), n)
    return n


AFTER_HEAD = ("final_logit_softcapping", "logit_scale", "logits_scaling")  # config keys some families apply to logits


def output_layer(model, rows: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The output layer's weight and bias (None if it has none) in float32: the rows of token ids
    `rows`, or the whole vocabulary. Computed once, it can be handed to float32_logits for every
    pass (a bfloat16 model's full output layer is copied to float32 once, not once a pass).

    None where the logits are not a plain product with the output layer (an adapter on the layer
    itself, or a family that caps or scales its logits after it): float32_logits then takes the
    model's own logits, cast to float32."""
    head = model.get_output_embeddings()
    configs = [model.config, getattr(model.config, "text_config", None)]
    if type(head) is not torch.nn.Linear or any(
        getattr(c, k, None) not in (None, 1, 1.0) for c in configs for k in AFTER_HEAD
    ):
        return None
    weight = head.weight if rows is None else head.weight[rows]
    bias = None if head.bias is None else (head.bias if rows is None else head.bias[rows]).float()
    return weight.float(), bias


def float32_logits(
    model, rows: list[int] | None = None, keep: int | torch.Tensor = 1, head=False, **inputs
) -> torch.Tensor:
    """Logits in float32 whatever dtype the model runs in: the body (model.get_decoder(), its final
    norm included) runs `inputs` (input_ids, attention_mask, position_ids, cache, use_cache) in the
    model's dtype; its last hidden state at the kept positions and the output layer's rows are then
    multiplied in float32. A bfloat16 output layer rounds logits between 16 and 32 to multiples of
    0.125, so that two answers' logit differences, and the scores made of them, tie on a handful of
    values.

    rows: the token ids to score (None: the whole vocabulary); keep: the last `keep` positions
    (0: all), or a tensor of position indices (as logits_to_keep); head: output_layer(model, rows)
    if computed before. Shape (batch, kept positions, len(rows) or the vocabulary). The model is a
    causal LM: plain, merged, or a PeftModel (its get_decoder reaches the adapted body)."""
    if head is False:
        head = output_layer(model, rows)
    if head is None:  # not a plain output layer: the model's own logits
        logits = model(**inputs, logits_to_keep=keep).logits.float()
        return logits if rows is None else logits[..., rows]
    weight, bias = head
    hidden = model.get_decoder()(**inputs).last_hidden_state
    hidden = hidden[:, -keep:] if isinstance(keep, int) else hidden[:, keep]
    logits = hidden.float() @ weight.T
    return logits if bias is None else logits + bias


def model_inputs(model, input_ids: torch.Tensor, intra_ids: torch.Tensor | None = None, intra=None) -> dict:
    """The model's input for `input_ids`: the ids themselves, or with an intra embedding `intra`
    (recsysllm.dynamic_positions) the token embeddings plus the intra embedding of `intra_ids`."""
    if intra is None:
        return {"input_ids": input_ids}
    embeds = model.get_input_embeddings()(input_ids)
    return {"inputs_embeds": embeds + intra(intra_ids.to(embeds.device)).to(embeds.dtype)}


class PrefixCache:
    """The keys and values of a token prefix, computed by one model pass and handed out to each
    later pass that continues it (rows), expanded to that pass's rows.

    A pass appends its own keys and values to the cache it is given, so each gets a cache of its
    own; its layers start from the prefix's tensors, repeated per row, and a DynamicLayer grows by
    concatenation, never writing into the tensors it starts from. No deep copy: the repeat is an
    autograd op, so with gradients on, the prefix runs once and every row's gradient reaches it."""

    def __init__(
        self,
        model,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        intra_ids=None,
        intra=None,
    ):
        self.cache = None
        if input_ids.shape[1]:
            self.cache = DynamicCache()
            inputs = model_inputs(model, input_ids, intra_ids, intra)
            model(
                **inputs,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )

    def rows(self, n: int) -> DynamicCache | None:
        """A cache for a pass over n rows per prefix row (each prefix row repeated n times in a
        row: one shared instruction for a batch of n prompts, or each prompt of a batch for n
        beams). None for an empty prefix: the pass needs no cache."""
        if self.cache is None:
            return None
        cache = copy.copy(self.cache)
        cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        if n > 1:
            cache.batch_repeat_interleave(n)
        return cache


def prompt_cache(model, ids: torch.Tensor, mask: torch.Tensor, beams: int) -> DynamicCache | None:
    """The keys and values of every prompt token but the last, computed once per prompt and copied
    for each beam. generate() copies the prompt for each beam first and then runs every copy
    through the model: for a 1,000-token direct prompt and 20 beams that is 20 times the work."""
    positions = left_padded_positions(mask)
    return PrefixCache(model, ids[:, :-1], mask[:, :-1], positions[:, :-1]).rows(beams)


@torch.no_grad()
def constrained_beams(
    model,
    tokenizer,
    prompts: list[str],
    trie: ItemTrie | list[ItemTrie],
    beams: int = 20,
    batch_size: int = 4,
    desc: str = "rank",
    share_prompt: bool = True,
    positions=None,
) -> list[list[list[int]]]:
    """Beam search that may only write item names. For each prompt, in the order given, what each
    of its `beams` returned sequences names, best first: item ids, or [] for a sequence naming none.

    `trie` is one ItemTrie for every prompt, or a list with one per prompt (a direct prompt ranks
    only its own candidates). Prompts are batched by token length and left-padded. share_prompt:
    run each prompt through the model once, not once per beam (prompt_cache); False is
    generate()'s own way, kept for the benchmark and the test that both agree. positions
    (recpipe.recsysllm.positions.Positions): add intra positions, one prompt at a time
    (written_out_beams)."""
    tries = trie if isinstance(trie, list) else [trie] * len(prompts)
    if len(tries) != len(prompts):
        raise RecpipeError(f"{len(tries)} tries for {len(prompts)} prompts: give one trie, or one per prompt")
    model.eval()
    if positions is not None:
        return [
            written_out_beams(model, tokenizer, p, t, beams, positions)
            for p, t in zip(tqdm(prompts, desc=desc, unit="prompt", file=sys.stderr), tries)
        ]
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in tokenizer(prompts).input_ids] if prompts else []
    named: list[list[list[int]]] = [[] for _ in prompts]
    for idx in length_batches(lengths, batch_size, desc):
        ids, mask = _encode_left_padded(tokenizer, [prompts[i] for i in idx], device)
        width, end = ids.shape[1], tries[idx[0]].end

        # This batch's values bound as defaults: generate() calls it only within this iteration.
        def allowed(batch_id: int, sequence: torch.Tensor, width=width, end=end, idx=idx) -> list[int]:
            # transformers calls this for row batch_id * num_beams + beam of the expanded
            # batch and passes batch_id, the prompt's place in this batch (not the row).
            generated = tuple(sequence[width:].tolist())
            if generated and generated[-1] == end:
                return [end]  # finished: EOS pads the rest
            return tries[idx[batch_id]].next_tokens(generated) or [end]

        # Not early_stopping=True: it stops once `beams` sequences have finished, and when few item
        # continuations are left, transformers keeps a finished beam running at score - 1e9 and
        # counts its copies as finished; real items still on their way are then never written.
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max(tries[i].max_len for i in idx),
            num_beams=beams,
            num_return_sequences=beams,
            do_sample=False,
            early_stopping=False,
            prefix_allowed_tokens_fn=allowed,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=end,
            cache=prompt_cache(model, ids, mask, beams) if share_prompt else None,
        )
        out = out[:, width:].view(len(idx), beams, -1)
        for i, row in zip(idx, out.tolist()):
            for seq in row:
                stop = seq.index(end) + 1 if end in seq else len(seq)
                named[i].append(tries[i].items(tuple(seq[:stop])))
    return named


@torch.no_grad()
def written_out_beams(model, tokenizer, prompt: str, trie: ItemTrie, beams: int, positions=None) -> list[list[int]]:
    """constrained_beams for one prompt, with transformers' beam search written out so that each
    beam can carry intra positions (recsysllm.dynamic_positions), which generate() cannot feed:
    after each token the trie of entities decides the next one's intra id, as in `generate`.

    The search is generate()'s with num_beams = beams, length penalty 1 and early_stopping False:
    each step keeps the 2 x beams best continuations of the running beams by summed
    log-probability; an EOS among the first `beams` of them finishes a sequence, scored by its mean
    log-probability per written token; the best `beams` others run on; the search stops when the
    best running beam's sum over the tokens written so far cannot beat the worst of `beams`
    finished sequences, or when the longest item is written. Log-probabilities are float32."""
    device = next(model.parameters()).device
    intra = positions.embedding if positions is not None else None
    end, head = trie.end, output_layer(model)
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    past = ids.shape[1] - 1
    prompt_intra, state = positions.run(ids[0].tolist()) if intra is not None else ([0] * ids.shape[1], None)
    cache = (
        PrefixCache(
            model, ids[:, :-1], intra_ids=torch.tensor([prompt_intra[:-1]]) if intra is not None else None, intra=intra
        ).rows(1)
        or DynamicCache()
    )
    running = [((), 0.0, state)]  # (written tokens, summed log-probability, intra state)
    inputs, intra_ids = [int(ids[0, -1])], [prompt_intra[-1]]  # each running beam's next input token
    finished: list[tuple[float, tuple[int, ...]]] = []
    for step in range(trie.max_len):
        x = torch.tensor(inputs, device=device)[:, None]
        at = torch.full_like(x, past + step)
        logits = float32_logits(
            model,
            head=head,
            **model_inputs(model, x, torch.tensor(intra_ids)[:, None], intra),
            position_ids=at,
            cache=cache,
            use_cache=True,
        )
        logp = logits[:, -1].log_softmax(-1)
        scored = []
        for b, (written, total, _) in enumerate(running):
            allowed = trie.next_tokens(written) or [end]
            scored += [(total + lp, b, token) for token, lp in zip(allowed, logp[b, allowed].tolist())]
        scored = sorted(scored, key=lambda s: -s[0])[: 2 * beams]
        last = step + 1 == trie.max_len
        going = []
        for rank, (total, b, token) in enumerate(scored):
            written = running[b][0] + (token,)
            if token == end or last:
                if rank < beams:
                    finished.append((total / (step + 1), written))
            elif len(going) < beams:
                going.append((b, token, total))
        finished = sorted(finished, key=lambda f: -f[0])[:beams]
        if not going or (len(finished) == beams and going[0][2] / (step + 1) <= finished[-1][0]):
            break
        cache.reorder_cache(torch.tensor([b for b, _, _ in going], device=device))
        running = [
            (running[b][0] + (token,), total, positions.run([token], running[b][2])[1] if intra is not None else None)
            for b, token, total in going
        ]
        inputs = [token for _, token, _ in going]
        intra_ids = [s[1] for _, _, s in running] if intra is not None else [0] * len(going)
    return [trie.items(written) for _, written in finished] + [[] for _ in range(beams - len(finished))]


def candidate_block_mask(past: int, lengths: list[int], dtype: torch.dtype, device) -> torch.Tensor:
    """The additive attention mask for candidates laid end to end after a cached prompt: each
    token sees the whole prompt and the tokens before it in its own candidate, nothing of the
    other candidates. Shape (1, 1, total, past + total)."""
    total = sum(lengths)
    block = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    index = torch.arange(total, device=device)
    sees = (block[:, None] == block[None, :]) & (index[:, None] >= index[None, :])
    sees = torch.cat([torch.ones(total, past, dtype=torch.bool, device=device), sees], dim=1)
    mask = torch.zeros(sees.shape, dtype=dtype, device=device).masked_fill(~sees, torch.finfo(dtype).min)
    return mask[None, None]


def likelihood_ranking(
    model,
    tokenizer,
    prompts: list[str],
    candidates: list[list[int]],
    names: dict[int, str],
    chunk: int = 25,
    desc: str = "score candidates",
    positions=None,
) -> list[list[int]]:
    """Each prompt's candidates, best first, by the mean log-probability per token of writing the
    candidate's name and then EOS after the prompt: the score beam search ranks finished items by,
    computed for every candidate instead of those the beams kept (ties: lower item id first)."""
    ranked = []
    for cands, logps in zip(
        candidates,
        candidate_logprobs(model, tokenizer, prompts, candidates, names, chunk, desc, positions),
        strict=True,
    ):
        scores = [tokens.mean().item() for tokens in logps]
        ranked.append([c for _, c in sorted(zip(scores, cands), key=lambda sc: (-sc[0], sc[1]))])
    return ranked


def answer_probabilities(
    model, tokenizer, prompts: list[str], answers: list[str], positions=None, desc: str = "score answers"
) -> list[torch.Tensor]:
    """Per prompt, the probability of each of `answers` as the whole answer (its text, then EOS,
    after the prompt), normalised over `answers`: float64, in their order."""
    texts = dict(enumerate(answers))
    keys = list(texts)
    return [
        torch.stack([tokens.double().sum() for tokens in logps]).softmax(0)
        for logps in candidate_logprobs(
            model, tokenizer, prompts, [keys] * len(prompts), texts, desc=desc, positions=positions
        )
    ]


def expected_ratings(model, tokenizer, prompts: list[str], ratings: dict[float, str], positions=None) -> list[float]:
    """Each prompt's rating as the mean of `ratings` (each rating and its text as the training
    targets write it) under answer_probabilities. Greedy text writes the most likely rating only,
    and a lightly tuned model writes the same one for every prompt; the mean keeps what the model
    knows about the others."""
    values = torch.tensor(list(ratings), dtype=torch.float64)
    return [
        float((w * values).sum())
        for w in answer_probabilities(model, tokenizer, prompts, list(ratings.values()), positions, "score ratings")
    ]


@torch.no_grad()
def candidate_logprobs(
    model,
    tokenizer,
    prompts: list[str],
    candidates: list[list[int]],
    names: dict[int, str],
    chunk: int = 25,
    desc: str = "score candidates",
    positions=None,
) -> list[list[torch.Tensor]]:
    """Per prompt, per candidate: the float32 log-probabilities of each token of the candidate's
    name and then EOS, written after the prompt.

    The prompt runs through the model once. Then `chunk` candidates at a time are laid end to end
    in one row after it, each numbered from the prompt's end and masked from the others
    (candidate_block_mask): one pass scores them all, and the prompt's keys and values are not
    copied for each candidate. Names are the tokens name_tokens gives, as in training and in ItemTrie.
    The log-softmax over the vocabulary is taken in float32 (float32_logits), whatever dtype the
    model runs in: a bfloat16 output layer would tie candidates that differ.

    positions (recpipe.recsysllm.positions.Positions): add intra positions, the prompt's and then
    each candidate's as if it were written after the prompt."""
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    end = tokenizer.eos_token_id
    head = output_layer(model)  # float32, once
    tokens: dict[int, list[int]] = {}
    out = []
    for prompt, cands in tqdm(list(zip(prompts, candidates, strict=True)), desc=desc, unit="prompt", file=sys.stderr):
        for c in cands:
            if c not in tokens:
                tokens[c] = name_tokens(tokenizer, names[c]) + [end]
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        past = ids.shape[1] - 1
        intra = positions.embedding if positions is not None else None
        if intra is not None:
            prompt_intra, state = positions.run(ids[0].tolist())
        prefix = PrefixCache(
            model, ids[:, :-1], intra_ids=torch.tensor([prompt_intra[:-1]]) if intra is not None else None, intra=intra
        )
        scores: list[torch.Tensor] = []
        for start in range(0, len(cands), chunk):
            # Each candidate: the prompt's last token, then the name and EOS it must predict.
            seqs = [[int(ids[0, -1])] + tokens[c] for c in cands[start : start + chunk]]
            lengths = [len(q) for q in seqs]
            x = torch.tensor([t for q in seqs for t in q], device=device)[None]
            at = torch.cat([torch.arange(past, past + n, device=device) for n in lengths])[None]
            mask = candidate_block_mask(past, lengths, dtype, device)
            intra_ids = None
            if intra is not None:  # each candidate goes on from the prompt's state
                intra_ids = torch.tensor(
                    [[i for q in seqs for i in [prompt_intra[-1], *positions.run(q[1:], state)[0]]]]
                )
            # Logits only where a token is predicted: not at a candidate's EOS, which predicts nothing
            # (the output layer over the whole vocabulary is a large share of the pass).
            starts = [sum(lengths[:j]) for j in range(len(lengths))]
            keep = torch.tensor([s + t for s, n in zip(starts, lengths) for t in range(n - 1)], device=device)
            # A cache of the chunk's own, starting from the prompt's (the pass appends the chunk's keys and values).
            logits = float32_logits(
                model,
                keep=keep,
                head=head,
                **model_inputs(model, x, intra_ids, intra),
                attention_mask=mask,
                position_ids=at,
                cache=prefix.rows(1),
                use_cache=True,
            )
            logp = logits[0].log_softmax(-1)
            offset = 0
            for q in seqs:
                picked = logp[offset : offset + len(q) - 1].gather(-1, torch.tensor(q[1:], device=device)[:, None])
                scores.append(picked[:, 0].cpu())
                offset += len(q) - 1
        out.append(scores)
    return out


def top_items(named: list[list[int]], k: int, exclude: set[int] | None = None) -> list[int]:
    """The first k distinct items the beams name, best beam first, skipping `exclude`."""
    items: list[int] = []
    for ids in named:
        items += [i for i in ids if i not in items and not (exclude and i in exclude)]
    return items[:k]


def constrained_topk(
    model,
    tokenizer,
    prompts: list[str],
    trie: ItemTrie | list[ItemTrie],
    k: int = 10,
    beams: int = 20,
    batch_size: int = 4,
    desc: str = "rank",
    exclude: list[set[int]] | None = None,
    share_prompt: bool = True,
) -> tuple[list[list[int]], float]:
    """The top-k items for each prompt by beam search that may only write item names, and the
    share of returned sequences that name an item (counted, not assumed).

    `trie`: one ItemTrie, or one per prompt (see constrained_beams). `exclude`: per prompt, items
    the search may not write (the user's history: ItemTrie.without), so that each prompt gets k
    items outside it whenever k such items exist."""
    if beams < k:
        raise RecpipeError(f"beam size {beams} is smaller than k={k}: beam search returns at most one item per beam")
    if exclude is not None and len(exclude) != len(prompts):
        raise RecpipeError(f"{len(exclude)} exclusion sets for {len(prompts)} prompts")
    if exclude is not None:
        trie = [
            t.without(ex)
            for t, ex in zip(trie if isinstance(trie, list) else [trie] * len(prompts), exclude, strict=True)
        ]
    named = constrained_beams(model, tokenizer, prompts, trie, beams, batch_size, desc, share_prompt)
    ranked = [top_items(n, k, exclude[i] if exclude else None) for i, n in enumerate(named)]
    total = sum(len(n) for n in named)
    valid = sum(bool(ids) for n in named for ids in n)
    return ranked, valid / max(total, 1)


@torch.no_grad()
def free_topk(
    model,
    tokenizer,
    prompts: list[str],
    names: dict[int, str],
    k: int,
    beams: int,
    max_new_tokens: int,
    batch_size: int = 4,
    desc: str = "generate",
) -> tuple[list[list[int]], float]:
    """Plain beam search, then each output matched to an item by its exact name. Returns the top-k
    items per prompt and the share of generated sequences that named a real item."""
    model.eval()
    device = next(model.parameters()).device
    by_name: dict[str, list[int]] = {}
    for item_id, name in names.items():
        by_name.setdefault(name.strip(), []).append(item_id)
    ranked, valid, total = [], 0, 0
    with tqdm(total=len(prompts), desc=desc, unit="prompt", file=sys.stderr) as bar:
        for _, batch in _batches(prompts, batch_size):
            ids, mask = _encode_left_padded(tokenizer, batch, device)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                num_beams=beams,
                num_return_sequences=beams,
                do_sample=False,
                early_stopping=True,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
            for start in range(0, len(texts), beams):
                items: list[int] = []
                for text in texts[start : start + beams]:
                    total += 1
                    match = by_name.get(text.strip(), [])
                    valid += bool(match)
                    items += [i for i in match if i not in items]
                ranked.append(items[:k])
            bar.update(len(batch))
    return ranked, valid / max(total, 1)


@torch.no_grad()
def generate(
    model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, desc: str = "generate", positions=None
) -> list[str]:
    """Greedy answers, in the order of `prompts`: the new tokens only, up to the first EOS,
    decoded and stripped. Prompts are batched by token length and left-padded.

    Each next token is the argmax of float32 logits (float32_logits), whatever dtype the model runs
    in: a bfloat16 output layer ties close tokens and the argmax then takes the lower id. Plain
    greedy decoding: what a model's generation_config adds (penalties, forced tokens) is not applied.

    positions (recpipe.recsysllm.positions.Positions): add intra positions, the prompt's and then,
    token by token, each written token's as the trie decides it."""
    model.eval()
    intra = positions.embedding if positions is not None else None
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    head = output_layer(model)  # float32, once
    lengths = [len(ids) for ids in tokenizer(prompts).input_ids] if prompts else []
    answers = [""] * len(prompts)
    for idx in length_batches(lengths, batch_size, desc):
        ids, mask = _encode_left_padded(tokenizer, [prompts[i] for i in idx], device)
        at, cache = left_padded_positions(mask), DynamicCache()
        intra_ids, states = None, None
        if intra is not None:  # padding (left, mask 0) is 0
            runs = [positions.run(row[m.bool()].tolist()) for row, m in zip(ids, mask)]
            intra_ids = torch.tensor([[0] * (ids.shape[1] - len(r)) + r for r, _ in runs])
            states = [state for _, state in runs]
        written = torch.empty((len(idx), 0), dtype=torch.long, device=device)
        done = torch.zeros(len(idx), dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            logits = float32_logits(
                model,
                head=head,
                **model_inputs(model, ids, intra_ids, intra),
                attention_mask=mask,
                position_ids=at,
                cache=cache,
                use_cache=True,
            )
            ids = logits[:, -1].argmax(-1).masked_fill(done, eos)[:, None]  # finished rows write EOS on
            written = torch.cat([written, ids], dim=1)
            done |= ids[:, 0] == eos
            if done.all():
                break
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            at = at[:, -1:] + 1
            if intra is not None:
                states = [positions.run([t], state)[1] for t, state in zip(ids[:, 0].tolist(), states)]
                intra_ids = torch.tensor([[state[1]] for state in states])
        for i, row in zip(idx, written.tolist()):
            row = row[: row.index(eos)] if eos in row else row
            answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return answers
