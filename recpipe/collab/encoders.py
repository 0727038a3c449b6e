"""Collaborative encoders for TALLRec's yes/no samples: BPR-MF (a user and an item embedding) and
SASRec (item embeddings and a sequence encoder), trained on a dataset's interactions without any
pair the samples validate or test on, saved as folders and loaded back for their vectors, which
CoLLM/LLaRA-style prompts can carry as collaborative tokens.

Objectives (CollabParams.objective). labels, the default, trains both as CoLLM trains its MF and
SASRec: binary cross-entropy of each rated training interaction's like/dislike label (rating above
like_threshold; unrated interactions are no targets), MF's logit the dot product of the user's and
the item's embedding (no bias terms, as CoLLM's), SASRec's the encoding of the user's earlier
training interactions (time order, rated or not: what a prompt's history lists; CoLLM's own data
feeds the earlier liked ones only) dotted with the item's embedding; early-stopped on the AUC of
every valid sample, scored as the encoders score (an unknown id scores 0). ranking trains them to
rank what users will rate (BPR, next item), as below. On ML-100K's TALLRec test samples (like:
rating > 3; seeds 0 and 1) labels gives BPR-MF an AUC of 0.746/0.745 and SASRec 0.752/0.744,
ranking BPR-MF 0.566/0.579 and SASRec 0.396/0.388: which items a user rates says little about
which they like.

Training data. Every interaction of the dataset's table, rated or not (an implicit event is an
interaction too), but those of a held-out (user_id, item_id) pair: the pair of any valid or test
sample, plus any pair the caller adds (e.g. the pipeline's `held_out`, which also holds P5's valid
and test pools). Every interaction of such a pair is dropped, an earlier one too: the pair must not
be learned at all. A user's interactions form one sequence in time order (recpipe.data.splits'
CHRONO_KEY); BPR-MF reads each (user, item) of it, SASRec its next-item steps (objective labels:
each rated one with its label). With objective ranking and positives "liked", only the
interactions rated above like_threshold train. The item set is the training log's items: an item
seen only in held-out pairs or histories (or, with "liked", never liked) gets no row (it is cold).

Validation and early stopping, objective ranking. Both models train as the P5 baselines do
(recpipe.collab.sasrec, recpipe.collab.bprmf) and stop on the NDCG@10 of ranking the TALLRec valid samples' positives
(label 1) among all items: MF from the user's row, SASRec after the sample's history, the user's
training items and the history left out of the ranking. Why these cases, rather than leave-one-out
on the training log:
- they are held out of training already, so validating costs no training data (leave-one-out
  would withhold each user's last training item, or validate on an item already learned);
- they are cut from the sample pool the test samples are cut from (the time window just before
  the test's under the temporal split, the users just before the test's under the paper split),
  so the epoch chosen is the one likeliest to carry over;
- a positive is an interaction the user went on to like: ranking it is what both models are
  trained to do (rank a user's items above others), whereas the yes/no AUC asks them to tell
  liked from disliked among rated items, which training on all interactions never sees. That AUC
  on all valid samples is still recorded for the best epoch (validation.valid_auc).
A valid positive whose user (MF) or whose history items (SASRec) the training log does not know,
or whose item has no row, cannot be ranked: it is skipped and counted.

Cold ids. An unknown user (MF), an unknown item, and a history with no known item (SASRec) get the
zero vector: it carries no collaborative information and scores 0 against anything. SASRec reads
a history's known items only (the unknown ones are dropped, in order). Each encoder counts them.

Artifact: a folder per model, `mf/` and `sasrec/`, each with model.pt (the state dict) and
encoder.json (kind, objective, dims, params, seed, `users` and `items`: the ids in row order, `item_counts`:
each item's training interactions, the held-out and training counts, and `validation`: the fit's
figures epoch by epoch). load_encoder(folder) gives the same vectors as the trained encoder."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import torch

from recpipe import RecpipeError, log
from recpipe.collab.bprmf import BPRMF, train_bprmf, train_mf_labels
from recpipe.collab.sasrec import SASRec, tokens_of, train_sasrec, train_sasrec_labels
from recpipe.collab.training import CHUNK, Cases, Fit, Labelled, threads
from recpipe.data.splits import user_histories
from recpipe.io import atomic_dir, read_mapping, write_json
from recpipe.metrics import auc_metrics
from recpipe.params.collab import CollabParams, SasrecParams

MODEL, META = "model.pt", "encoder.json"
FOLDERS = {"bprmf": "mf", "sasrec": "sasrec"}
SAMPLE_COLUMNS = {"split", "user_id", "item_id", "label", "history_item_ids"}
LOG_COLUMNS = {"user_id", "item_id", "rating", "timestamp", "row"}


def check_columns(frame: pl.DataFrame, needed: set[str], what: str) -> None:
    missing = needed - set(frame.columns)
    if missing:
        raise RecpipeError(f"collab: {what} lack the columns {sorted(missing)}")


def held_out_pairs(samples: pl.DataFrame, extra: pl.DataFrame | None = None) -> pl.DataFrame:
    """The (user_id, item_id) pairs training must never see: every valid and test sample's, and `extra`'s."""
    check_columns(samples, SAMPLE_COLUMNS, "the samples (the instructions stage's)")
    pairs = [samples.filter(pl.col("split") != "train").select("user_id", "item_id")]
    if extra is not None:
        check_columns(extra, {"user_id", "item_id"}, "the held-out pairs")
        pairs.append(extra.select("user_id", "item_id"))
    return pl.concat(pairs).unique().sort("user_id", "item_id")


def training_log(interactions: pl.DataFrame, held: pl.DataFrame) -> pl.DataFrame:
    """The interactions but every one of a held-out pair."""
    check_columns(interactions, LOG_COLUMNS, "the interactions (the ingest stage's)")
    return interactions.join(held, on=["user_id", "item_id"], how="anti")


def user_sequences(log_frame: pl.DataFrame) -> tuple[list[int], list[list[int]]]:
    """The users (sorted) and each one's items in time order."""
    hist = user_histories(log_frame)
    return hist["user_id"].to_list(), hist["item_id"].to_list()


def labelled_sequences(
    log_frame: pl.DataFrame, like_threshold: float
) -> tuple[list[int], list[list[int]], list[list[int | None]]]:
    """The users (sorted), each one's items in time order, and each interaction's label: 1 rated
    above like_threshold, 0 rated at most that, None unrated."""
    hist = user_histories(log_frame)
    labels = [[None if r is None else int(r > like_threshold) for r in rs] for rs in hist["rating"].to_list()]
    return hist["user_id"].to_list(), hist["item_id"].to_list(), labels


def check_no_held_out(users: Sequence[int], sequences: Sequence[Sequence[int]], held: pl.DataFrame) -> None:
    """The guard: a RecpipeError if any (user, item) about to train is a held-out pair."""
    hidden = set(held.select("user_id", "item_id").iter_rows())
    leaked = sorted({(u, i) for u, seq in zip(users, sequences) for i in seq if (u, i) in hidden})
    if leaked:
        raise RecpipeError(
            f"collab: {len(leaked)} held-out (user_id, item_id) pairs would reach training, e.g. {leaked[:3]}"
        )


class Encoder:
    """Vectors of one trained model: `items` are the item ids in row order, `item_counts` their
    training interactions. Unknown ids get the zero vector and are counted in `cold`."""

    kind: str

    def __init__(self, model: torch.nn.Module, meta: dict):
        self.model = model.eval()
        self.meta = meta
        self.items: list[int] = meta["items"]
        self.item_row = {item: r for r, item in enumerate(self.items)}
        self.item_counts = dict(zip(self.items, meta["item_counts"]))
        self.dim: int = meta["dim"]
        self.threads: int = meta["params"]["threads"]
        self.cold: Counter[str] = Counter()

    def item_table(self) -> torch.Tensor:
        """Every item's vector, in row order."""
        raise NotImplementedError

    def item_vectors(self, item_ids: Sequence[int]) -> torch.Tensor:
        """float32 [len(item_ids), dim]; an unknown item's row is zero."""
        rows = [self.item_row.get(i, -1) for i in item_ids]
        out = torch.zeros(len(rows), self.dim, dtype=torch.float32)
        known = [k for k, r in enumerate(rows) if r >= 0]
        self.cold["items"] += len(rows) - len(known)
        with torch.no_grad():
            out[known] = self.item_table()[[rows[k] for k in known]].float()
        return out

    def user_vectors(self, user_ids: Sequence[int], histories: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def training_count(self, item_ids: Sequence[int]) -> list[int]:
        """Each item's number of training interactions (0: unknown)."""
        return [self.item_counts.get(i, 0) for i in item_ids]


class MFEncoder(Encoder):
    kind = "bprmf"

    def __init__(self, model: BPRMF, meta: dict):
        super().__init__(model, meta)
        self.users: list[int] = meta["users"]
        self.user_row = {user: r for r, user in enumerate(self.users)}

    def item_table(self) -> torch.Tensor:
        return self.model.item.weight

    def user_vectors(self, user_ids: Sequence[int], histories: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """float32 [len(user_ids), dim]: each user's embedding (histories are not read); an unknown
        user's row is zero."""
        rows = [self.user_row.get(u, -1) for u in user_ids]
        out = torch.zeros(len(rows), self.dim, dtype=torch.float32)
        known = [k for k, r in enumerate(rows) if r >= 0]
        self.cold["users"] += len(rows) - len(known)
        with torch.no_grad():
            out[known] = self.model.user.weight[[rows[k] for k in known]].float()
        return out


class SasrecEncoder(Encoder):
    kind = "sasrec"

    def __init__(self, model: SASRec, meta: dict):
        super().__init__(model, meta)
        self.max_len: int = meta["params"]["max_len"]

    def item_table(self) -> torch.Tensor:
        return self.model.item.weight[1:]  # token 0 pads

    def user_vectors(self, user_ids: Sequence[int], histories: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """float32 [len(histories), dim]: the encoding of each history (oldest first; its last
        max_len known items), as CoLLM encodes a user with SASRec; user_ids are not read. A history
        with no known item gets the zero vector."""
        if histories is None or len(histories) != len(user_ids):
            raise RecpipeError("collab: SASRec's user vectors need one history per user")
        known = [[i for i in h if i in self.item_row] for h in histories]
        self.cold["history_items"] += sum(len(h) for h in histories) - sum(len(k) for k in known)
        self.cold["users"] += sum(not k for k in known)
        out = torch.zeros(len(known), self.dim, dtype=torch.float32)
        at = [k for k, h in enumerate(known) if h]
        with torch.no_grad(), threads(self.threads):
            for s in range(0, len(at), CHUNK):
                chunk = at[s : s + CHUNK]
                seqs = torch.tensor([tokens_of(known[k], self.item_row, self.max_len) for k in chunk], dtype=torch.long)
                out[chunk] = self.model.encode(seqs.view(-1, self.max_len)).float()
        return out


def build_model(meta: dict) -> torch.nn.Module:
    if meta["kind"] == "bprmf":
        return BPRMF(len(meta["users"]), len(meta["items"]), meta["dim"])
    if meta["kind"] == "sasrec":
        return SASRec(len(meta["items"]), SasrecParams(**meta["params"]))
    raise RecpipeError(f"collab: unknown encoder kind {meta['kind']!r}")


def wrap(model: torch.nn.Module, meta: dict) -> Encoder:
    return (MFEncoder if meta["kind"] == "bprmf" else SasrecEncoder)(model, meta)


def save_encoder(encoder: Encoder, folder: str | Path) -> None:
    """The encoder as a folder: model.pt (its state dict) and encoder.json; replaced whole."""
    with atomic_dir(folder) as tmp:
        torch.save(encoder.model.state_dict(), tmp / MODEL)
        write_json(encoder.meta, tmp / META)


def load_encoder(folder: str | Path) -> Encoder:
    """An encoder saved by save_encoder."""
    folder = Path(folder)
    meta = read_mapping(folder / META, "collab")
    path = folder / MODEL
    if not path.is_file():
        raise RecpipeError(f"{path}: not found (the collab stage writes it)")
    model = build_model(meta)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as e:
        raise RecpipeError(f"{path}: not a state dict of this encoder ({str(e).splitlines()[0]})") from e
    return wrap(model, meta)


def load_encoders(out_dir: str | Path) -> dict[str, Encoder]:
    """Both encoders of train_encoders' folder: {"bprmf": ..., "sasrec": ...}."""
    return {kind: load_encoder(Path(out_dir) / folder) for kind, folder in FOLDERS.items()}


def valid_positives(
    samples: pl.DataFrame, user_row: dict[int, int], items: set[int], train: list[list[int]]
) -> tuple[Cases[int], Cases[list[int]], dict]:
    """The validation cases of both models from the valid samples with label 1 (see the module's
    docstring), and how many each had to skip."""
    rows = samples.filter(pl.col("split") == "valid", pl.col("label") == 1)
    mf, sas = Cases([], [], []), Cases([], [], [])
    for user, item, history in rows.select("user_id", "item_id", "history_item_ids").iter_rows():
        if item not in items:
            continue
        had = train[user_row[user]] if user in user_row else []
        known = [i for i in history or [] if i in items]
        exclude = (set(had) | set(known)) - {item}  # the target is never left out
        for cases, given in ((mf, user_row.get(user)), (sas, known or None)):
            if given is not None:
                cases.inputs.append(given)
                cases.targets.append(item)
                cases.exclude.append(exclude)
    counts = {"valid_positives": rows.height, "bprmf_cases": len(mf), "sasrec_cases": len(sas)}
    if not len(mf) or not len(sas):
        raise RecpipeError(
            f"collab: {rows.height} valid samples with label 1, of which {len(mf)} (BPR-MF) and {len(sas)} (SASRec) "
            "have a user or history and an item the training log knows: nothing to early-stop on"
        )
    return mf, sas, counts


def valid_labelled(
    samples: pl.DataFrame, user_row: dict[int, int], items: set[int]
) -> tuple[Labelled[int], Labelled[list[int]], dict]:
    """The labelled validation cases of both models: every valid sample, MF reading the user's row,
    SASRec the history's known items; a case whose user (MF), history (SASRec) or item the
    training log does not know scores 0, as the encoders score it (counted as skipped)."""
    rows = samples.filter(pl.col("split") == "valid")
    labels = rows["label"].cast(pl.Int64).to_list()
    if set(labels) != {0, 1}:
        raise RecpipeError(
            f"collab: {rows.height} valid samples with labels {sorted(set(labels))}: both are needed, nothing to early-stop on"
        )
    targets = rows["item_id"].to_list()
    mf_in = [user_row.get(u) for u in rows["user_id"].to_list()]
    sas_in = [[i for i in h or [] if i in items] or None for h in rows["history_item_ids"].to_list()]
    mf, sas = Labelled(mf_in, targets, labels), Labelled(sas_in, targets, labels)
    counts = {
        "valid_samples": rows.height,
        "bprmf_cases": sum(x is not None and t in items for x, t in zip(mf_in, targets)),
        "sasrec_cases": sum(x is not None and t in items for x, t in zip(sas_in, targets)),
    }
    return mf, sas, counts


def validation_figures(fit: Fit, counts: dict, kind: str) -> dict:
    total = counts.get("valid_positives", counts.get("valid_samples"))
    curve = "valid_ndcg" if fit.metric.startswith("ndcg") else f"valid_{fit.metric}_by_epoch"
    return fit.metrics() | {
        "cases": counts[f"{kind}_cases"],
        "skipped": total - counts[f"{kind}_cases"],
        "losses": [round(x, 6) for x in fit.losses],
        curve: [round(x, 6) for x in fit.valid],
    }  # no run time: the same run writes the same bytes


def valid_auc(encoder: Encoder, samples: pl.DataFrame) -> float | None:
    """The yes/no AUC of the encoder's scores on every valid sample (None with one class)."""
    valid = samples.filter(pl.col("split") == "valid")
    if not valid.height:
        return None
    users = valid["user_id"].to_list()
    histories = [h or [] for h in valid["history_item_ids"].to_list()]
    scores = (encoder.user_vectors(users, histories) * encoder.item_vectors(valid["item_id"].to_list())).sum(-1)
    encoder.cold.clear()  # the counts are the scorer's
    return auc_metrics(valid["label"].cast(pl.Int64).to_list(), scores.tolist())["auc"]


def train_encoders(
    interactions: pl.DataFrame,
    samples: pl.DataFrame,
    out_dir: str | Path,
    params: CollabParams,
    seed: int,
    held_out: pl.DataFrame | None = None,
) -> dict[str, Encoder]:
    """Train BPR-MF and SASRec on `interactions` (the dataset's ingest table) without the held-out
    pairs of `samples` (TALLRec's, with split and history_item_ids) and of `held_out`, with
    params.objective's loss and early stopping (see the module's docstring); save them under
    out_dir/mf and out_dir/sasrec and return them. Deterministic for a seed (CPU)."""
    held = held_out_pairs(samples, held_out)
    kept = training_log(interactions, held)
    labels_objective = params.objective == "labels"
    if labels_objective:  # every interaction is history; the rated ones are targets
        log_frame = kept
        users, train, labels = labelled_sequences(log_frame, params.like_threshold)
    else:
        log_frame = kept if params.positives == "all" else kept.filter(pl.col("rating") > params.like_threshold)
        users, train = user_sequences(log_frame)
    check_no_held_out(users, train, held)
    items = sorted({i for seq in train for i in seq})
    counts = Counter(i for seq in train for i in seq)
    user_row = {u: r for r, u in enumerate(users)}
    if labels_objective:
        mf_cases, sas_cases, case_counts = valid_labelled(samples, user_row, set(items))
    else:
        mf_cases, sas_cases, case_counts = valid_positives(samples, user_row, set(items), train)
    log.info(
        "collab: %d training interactions (%s) of %d users and %d items (%d interactions of %d held-out pairs left out)",
        log_frame.height,
        "labels" if labels_objective else f"ranking, {params.positives}",
        len(users),
        len(items),
        interactions.height - kept.height,
        held.height,
    )
    base = {
        "seed": seed,
        "objective": params.objective,
        "items": items,
        "item_counts": [counts[i] for i in items],
        "held_out_pairs": held.height,
        "held_out_interactions": interactions.height - kept.height,
        "training_interactions": log_frame.height,
        "positives": params.positives,
        "like_threshold": params.like_threshold,
    }
    if labels_objective:
        base["labelled_interactions"] = sum(y is not None for ys in labels for y in ys)
    encoders: dict[str, Encoder] = {}
    if labels_objective:
        mf, fit = train_mf_labels(train, labels, mf_cases, items, params.bprmf, seed)
    else:
        mf, fit = train_bprmf(train, mf_cases, items, params.bprmf, seed)
    meta = base | {"kind": "bprmf", "dim": params.bprmf.dim, "users": users, "params": params.bprmf.model_dump()}
    encoders["bprmf"] = MFEncoder(mf, meta | {"validation": validation_figures(fit, case_counts, "bprmf")})
    if labels_objective:
        sas, fit = train_sasrec_labels(train, labels, sas_cases, items, params.sasrec, seed)
    else:
        sas, fit = train_sasrec(train, sas_cases, items, params.sasrec, seed)
    meta = base | {"kind": "sasrec", "dim": params.sasrec.hidden, "params": params.sasrec.model_dump()}
    encoders["sasrec"] = SasrecEncoder(sas, meta | {"validation": validation_figures(fit, case_counts, "sasrec")})
    for kind, encoder in encoders.items():
        encoder.meta["validation"]["valid_auc"] = valid_auc(encoder, samples)
        save_encoder(encoder, Path(out_dir) / FOLDERS[kind])
        log.info(
            "collab: %s: validation %s", kind, {k: encoder.meta["validation"][k] for k in ("best_epoch", "valid_auc")}
        )
    return encoders
