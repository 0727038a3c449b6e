"""What BPR-MF and SASRec share while they train: the early-stopping loop, the validation ranking
(NDCG@10 of one held-out item per case, full ranking with some items left out), negative sampling,
and the torch thread and RNG guards that keep a run deterministic for a seed.

Validation cases are (input, target, exclude) triples: the input is what the model reads (a user's
embedding row for BPR-MF, an item sequence for SASRec), the target the item it should rank high,
and exclude the items left out of the ranking (the ones the user already had)."""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch
from torch import nn
from tqdm import tqdm

from recpipe import RecpipeError, log

CHUNK = 512  # cases scored at once: bounds the [cases, items] score matrix on large datasets
VALID_K = 10  # early stopping watches NDCG at this k

Input = TypeVar("Input")


@dataclass
class Cases(Generic[Input]):
    """Validation cases, one per index: the model reads inputs[c], should rank targets[c] high, and
    never ranks the items of exclude[c]."""

    inputs: list[Input]
    targets: list[int]
    exclude: list[Collection[int]]

    def __post_init__(self):
        if not len(self.inputs) == len(self.targets) == len(self.exclude):
            raise RecpipeError(
                f"collab: validation cases with {len(self.inputs)} inputs, {len(self.targets)} targets and {len(self.exclude)} exclusions"
            )

    def __len__(self) -> int:
        return len(self.targets)


@contextlib.contextmanager
def threads(n: int):
    """Run with n torch threads, then restore the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def left_pad(tokens: list[int], length: int) -> list[int]:
    """The last `length` tokens, padded on the left with 0."""
    tokens = tokens[-length:]
    return [0] * (length - len(tokens)) + tokens


def columns(train: list[list[int]], items: list[int]) -> dict[int, int]:
    """Each item's column in the score matrix; every item of the sequences must be one of them."""
    col = {item: j for j, item in enumerate(items)}
    unknown = sorted({i for seq in train for i in seq} - set(col))
    if unknown:
        raise RecpipeError(f"collab: the training sequences name items {unknown[:5]} that are not in the item set")
    return col


def target_columns(cases: Cases, col: dict[int, int]) -> list[int]:
    """The validation targets' columns; a target outside the item set cannot be ranked."""
    unknown = sorted({t for t in cases.targets if t not in col})
    if unknown:
        raise RecpipeError(f"collab: the validation targets {unknown[:5]} are not in the item set")
    return [col[t] for t in cases.targets]


@dataclass
class Fit:
    """One early-stopped training run: the model holds the best epoch's weights."""

    best_epoch: int
    best_valid: float  # NDCG@VALID_K at best_epoch
    epochs_run: int
    losses: list[float] = field(default_factory=list)  # mean training loss of each epoch
    valid: list[float] = field(default_factory=list)  # the validation score after each epoch
    seconds: float = 0.0
    metric: str = f"ndcg@{VALID_K}"  # what the validation score is: NDCG@VALID_K (ranking) or auc (labels)

    def metrics(self) -> dict:
        return {
            "best_epoch": self.best_epoch,
            f"best_valid_{self.metric}": round(self.best_valid, 5),
            "epochs_run": self.epochs_run,
        }


Loop = Callable[[nn.Module, Callable[[], float], Callable[[], float], int, int, str], Fit]


def early_stopping(
    model: nn.Module,
    train_epoch: Callable[[], float],
    validate: Callable[[], float],
    epochs: int,
    patience: int,
    name: str,
    metric: str = f"ndcg@{VALID_K}",
) -> Fit:
    """Train epoch after epoch, validating after each, until `patience` epochs in a row bring no
    better validation score than the best so far, or `epochs` have run; then load the best epoch's
    weights into the model (the earliest of equal best scores). train_epoch() trains one epoch and
    returns its mean loss; validate() scores the model (higher is better), `metric` names it."""
    start = time.perf_counter()
    fit = Fit(best_epoch=0, best_valid=-math.inf, epochs_run=0, metric=metric)
    best_state = copy.deepcopy(model.state_dict())
    bar = tqdm(range(1, epochs + 1), desc=name, unit="epoch", file=sys.stderr)
    for epoch in bar:
        model.train()
        fit.losses.append(float(train_epoch()))
        model.eval()
        with torch.no_grad():
            score = float(validate())
        fit.valid.append(score)
        fit.epochs_run = epoch
        if score > fit.best_valid:
            fit.best_epoch, fit.best_valid, best_state = epoch, score, copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{fit.losses[-1]:.4f}", valid=f"{score:.4f}", best=fit.best_epoch)
        if epoch - fit.best_epoch >= patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    fit.seconds = time.perf_counter() - start
    log.info(
        "%s: best validation %s %.4f at epoch %d of %d run (patience %d, at most %d), %.1f s",
        name,
        metric,
        fit.best_valid,
        fit.best_epoch,
        fit.epochs_run,
        patience,
        epochs,
        fit.seconds,
    )
    return fit


def run_epoch(opt: torch.optim.Optimizer, batches, batch_loss: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """One pass of optimizer steps over `batches`; the mean loss."""
    total, steps = 0.0, 0
    for batch in batches:
        loss = batch_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total, steps = total + loss.item(), steps + 1
    return total / steps


def ranks(scores: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """The 0-based rank of each row's target column among the columns not excluded, ties going to
    the lower column (as P5's top-k does); an excluded target never ranks (rank = number of columns)."""
    scores = scores.masked_fill(exclude, -math.inf)
    t = scores.gather(1, target.unsqueeze(1))
    cols = torch.arange(scores.shape[1]).unsqueeze(0)
    rank = (scores > t).sum(1) + ((scores == t) & (cols < target.unsqueeze(1))).sum(1)
    return torch.where(exclude.gather(1, target.unsqueeze(1)).squeeze(1), scores.shape[1], rank)


def ndcg_at(rank: torch.Tensor, k: int = VALID_K) -> float:
    """Mean NDCG@k of one relevant item per case at these 0-based ranks."""
    gain = torch.where(rank < k, 1 / torch.log2(rank.double() + 2), torch.zeros((), dtype=torch.float64))
    return float(gain.mean())


def exclusion(rows: list[Collection[int]], n: int) -> torch.Tensor:
    """[len(rows), n] True at each row's columns."""
    mask = torch.zeros(len(rows), n, dtype=torch.bool)
    at = [r for r, h in enumerate(rows) for _ in h]
    mask[at, [c for h in rows for c in h]] = True
    return mask


def validation_ndcg(scores_of, inputs: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor) -> float:
    """NDCG@10 of the validation cases (0 when there are none), CHUNK cases at a time;
    scores_of(inputs) gives every column's score per case."""
    if not len(target):
        return 0.0
    rank = torch.cat(
        [
            ranks(scores_of(inputs[s : s + CHUNK]), target[s : s + CHUNK], exclude[s : s + CHUNK])
            for s in range(0, len(target), CHUNK)
        ]
    )
    return ndcg_at(rank)


@dataclass
class Labelled(Generic[Input]):
    """Labelled validation cases, one per index: the model reads inputs[c] (None: it cannot, the
    case scores 0, as the encoder scores an unknown id) and scores targets[c] (an item outside the
    item set scores 0 too); labels[c] is 1 (liked) or 0."""

    inputs: list[Input | None]
    targets: list[int]
    labels: list[int]

    def __post_init__(self):
        if not len(self.inputs) == len(self.targets) == len(self.labels):
            raise RecpipeError(
                f"collab: labelled cases with {len(self.inputs)} inputs, {len(self.targets)} targets and {len(self.labels)} labels"
            )
        if set(self.labels) != {0, 1}:
            raise RecpipeError(f"collab: labelled validation cases need both labels, got {sorted(set(self.labels))}")

    def __len__(self) -> int:
        return len(self.targets)

    def scorable(self, col: dict[int, int]) -> list[int]:
        """The cases whose input and target the model knows."""
        return [c for c, (x, t) in enumerate(zip(self.inputs, self.targets)) if x is not None and t in col]


def validation_auc(labels: Collection[int], scored: list[int], scores: torch.Tensor) -> float:
    """The AUC of the labels against the scores, the cases at `scored` having scores (in order),
    every other case 0."""
    from sklearn.metrics import roc_auc_score

    full = torch.zeros(len(labels), dtype=torch.float64)
    full[scored] = scores.double()
    return float(roc_auc_score(list(labels), full.numpy()))


def sample_negatives(
    shape: tuple[int, ...], n: int, seen: torch.Tensor, gen: torch.Generator, offset: int = 0
) -> torch.Tensor:
    """Uniform items in [offset, offset + n), redrawn while they are among the row's seen ones
    (seen: [rows, offset + n] bool, one row per leading index of shape); a row that saw every item
    keeps whatever is drawn."""
    neg = torch.randint(offset, offset + n, shape, generator=gen)
    can_draw = seen[:, offset:].sum(1) < n
    can_draw = can_draw.view(-1, *([1] * (len(shape) - 1)))
    redraw = seen.gather(1, neg.view(seen.shape[0], -1)).view(shape) & can_draw
    while redraw.any():  # rejection sampling
        neg[redraw] = torch.randint(offset, offset + n, (int(redraw.sum()),), generator=gen)
        redraw = seen.gather(1, neg.view(seen.shape[0], -1)).view(shape) & can_draw
    return neg
