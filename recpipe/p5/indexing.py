"""How P5 prompts write each item (`p5.indexing`), after OpenP5's item indexings (Xu et al.,
arXiv 2306.11134).

- names: the item's name (its title).
- random: a number from a seeded permutation of the items (1000, 1001, ...): an id says nothing
  about the item.
- sequential: numbers (from 1000) in order of first appearance when the users' chronological
  histories are read user by user. Items one user had in a row get consecutive ids, so an id
  gives away sequence order: P5's known leak, which made its sequential results look better than
  they are (a model can learn "the next id"). Here the ids come from training interactions only,
  so no valid or test target is numbered by where it sits, but consecutive training items still
  have consecutive ids.
- collaborative: the items are split by spectral clustering of their co-occurrence graph (two
  items are linked by how many users had both) into `clusters` groups, each group again until a
  group holds at most `clusters` items; an item's id is its path of cluster numbers and its place
  in the last group, one word per level ("c3 c17 c5"). Plain words, no new tokens: a space is a
  boundary every tokenizer here splits at, so the items of one cluster share the tokens of its
  path and the decoding trie branches as the hierarchy does.

Training interactions only: each user's leave-one-out training part (every rated item but the last
two), the histories sequential training prompts are cut from. No leave-one-out valid or test item
shapes an id. The rating family's time split tests pairs that may sit in these histories; an id
uses only that the pair exists, which the training prompts' histories show anyway, never its
rating or review."""

from __future__ import annotations

import random

import numpy as np
import polars as pl

from recpipe import RecpipeError
from recpipe.data.splits import leave_one_out

INDEXINGS = ("names", "random", "sequential", "collaborative")
FIRST_ID = 1000  # numbered ids start here, so that every id has the same number of digits on ML-100K


def training_histories(interactions: pl.DataFrame) -> dict[int, list[int]]:
    """Each user's leave-one-out training items (rated, chronological), users in id order."""
    loo = leave_one_out(interactions.filter(pl.col("rating").is_not_null()))
    train = loo.filter(pl.col("split") == "train")
    return dict(train.group_by("user_id", maintain_order=True).agg("item_id").iter_rows())


def sequential_order(histories: dict[int, list[int]], items: list[int]) -> list[int]:
    """The items in order of first appearance, reading the histories user by user (in user id
    order); items no history holds follow, in item id order."""
    order: dict[int, None] = {}
    for user in sorted(histories):
        order.update((i, None) for i in histories[user] if i not in order)
    known = set(items)
    return [i for i in order if i in known] + sorted(known - set(order))


def cooccurrence(histories: dict[int, list[int]], items: list[int]) -> np.ndarray:
    """items x items: how many users had both (each user counts once per pair; diagonal 0)."""
    from scipy import sparse

    at = {item: k for k, item in enumerate(items)}
    rows, cols = [], []
    for user, history in enumerate(histories[u] for u in sorted(histories)):
        for item in dict.fromkeys(history):
            if item in at:
                rows.append(user)
                cols.append(at[item])
    x = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(histories), len(items)))
    c = (x.T @ x).toarray()
    np.fill_diagonal(c, 0)
    return c


def kmeans(points: np.ndarray, k: int, seed: int, restarts: int = 4, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding, the best of `restarts` (least inertia); labels."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centers = [points[rng.integers(len(points))]]
        for _ in range(1, k):
            d = np.min(((points[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
            total = d.sum()
            centers.append(
                points[rng.choice(len(points), p=d / total)] if total > 0 else points[rng.integers(len(points))]
            )
        centers = np.array(centers)
        labels = np.full(len(points), -1)
        for _ in range(iterations):
            dist = ((points[:, None, :] - centers[None]) ** 2).sum(-1)
            new = dist.argmin(1)
            if np.array_equal(new, labels):
                break
            labels = new
            for c in range(k):
                members = points[labels == c]
                # An emptied cluster takes the point farthest from its center, so k stay in use.
                centers[c] = members.mean(0) if len(members) else points[dist.min(1).argmax()]
        inertia = ((points - centers[labels]) ** 2).sum()
        if inertia < best_inertia - 1e-12:
            best, best_inertia = labels, inertia
    return best


def spectral_split(affinity: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k clusters of a weighted graph (Ng, Jordan and Weiss): the top-k eigenvectors of the
    normalized affinity, rows scaled to unit length, then k-means. The affinity is regularized by
    its mean degree spread over every pair (Amini et al. 2013), so that isolated items and
    disconnected parts do not each claim an eigenvector of their own."""
    from scipy.linalg import eigh

    n = len(affinity)
    tau = affinity.sum() / n
    a = affinity + (tau / n if tau > 0 else 1.0)
    d = 1 / np.sqrt(a.sum(1))
    m = d[:, None] * a * d[None, :]
    try:  # only the top k: a full eigh of ML-100K's 1,682 items takes seconds
        _, embedding = eigh(m, subset_by_index=[n - k, n - 1])
    except np.linalg.LinAlgError:  # the subset driver can fail on near-equal eigenvalues (small, tight clusters)
        embedding = np.linalg.eigh(m)[1][:, -k:]
    embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    return kmeans(embedding, k, seed)


def collaborative_paths(
    histories: dict[int, list[int]], items: list[int], clusters: int, seed: int
) -> dict[int, tuple[int, ...]]:
    """Each item's path in the cluster hierarchy: cluster numbers, then its place in its last
    cluster; every number below `clusters`. Clusters are numbered by their smallest item id and a
    leaf's items in id order, so the paths do not depend on k-means' label order."""
    items = sorted(items)
    graph = cooccurrence(histories, items)
    paths: dict[int, tuple[int, ...]] = {}

    def place(members: np.ndarray, path: tuple[int, ...]) -> None:  # members: indices into items, ascending
        if len(members) <= clusters:
            paths.update((items[m], (*path, leaf)) for leaf, m in enumerate(members))
            return
        labels = spectral_split(graph[np.ix_(members, members)], clusters, seed)
        groups = [members[labels == c] for c in range(clusters)]
        groups = sorted((g for g in groups if len(g)), key=lambda g: g[0])
        if len(groups) < 2:  # nothing to tell the items apart by: split them in id order
            groups = np.array_split(members, clusters)
        for c, group in enumerate(groups):
            place(group, (*path, c))

    place(np.arange(len(items)), ())
    return paths


def item_names(
    items: pl.DataFrame, interactions: pl.DataFrame, indexing: str, seed: int, clusters: int = 20
) -> dict[int, str]:
    """How prompts write each item under `indexing` (INDEXINGS), from the training interactions."""
    names = dict(zip(items["item_id"].to_list(), items["name"].to_list()))
    ids = sorted(names)
    if indexing == "names":
        return names
    if indexing == "random":
        random.Random(f"item-ids-{seed}").shuffle(ids)
        return {item: str(FIRST_ID + rank) for rank, item in enumerate(ids)}
    if indexing == "sequential":
        return {
            item: str(FIRST_ID + rank)
            for rank, item in enumerate(sequential_order(training_histories(interactions), ids))
        }
    if indexing == "collaborative":
        paths = collaborative_paths(training_histories(interactions), ids, clusters, seed)
        return {item: " ".join(f"c{k}" for k in paths[item]) for item in ids}
    raise RecpipeError(f"p5.indexing: unknown indexing {indexing!r} (known: {', '.join(INDEXINGS)})")
