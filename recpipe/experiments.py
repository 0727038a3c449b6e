"""DVC experiments as records: `dvc exp show --json` (run here or saved) read into one record per
run with its params flattened to dotted keys, and the reference params a sweep is compared with.
The TALLRec sweep and RecSysLLM's ablations both aggregate these records."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from recpipe import RecpipeError
from recpipe.io import read_mapping

PARAMS_FILE = "params.yaml"


def flatten(mapping: dict, prefix: str = "") -> dict:
    """Nested mappings as one dotted key per leaf: {"sample": {"k": 64}} -> {"sample.k": 64}."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def same_value(a, b) -> bool:
    """Equal params; numbers by value (1e-3 written by `-S` and 0.001 in params.yaml are the same)."""
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return float(a) == float(b) if numbers else a == b


def get_path(data, path: tuple):
    """data[path[0]][path[1]]...; None where a key is missing."""
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def records(exp_show: list) -> list[dict]:
    """`dvc exp show --json` as one record per committed baseline and experiment: {name, timestamp,
    params (params.yaml's, flattened), metrics ({file: data})}. The workspace row is left out: it
    is either a committed run again or uncommitted work. An experiment still queued or running, or
    one that failed, gets no metrics: the files DVC shows for it are its baseline commit's."""
    if not isinstance(exp_show, list) or not all(isinstance(row, dict) and "rev" in row for row in exp_show):
        raise RecpipeError(
            f"dvc exp show --json: expected a list of revisions, each with a 'rev', got {type(exp_show).__name__}"
        )
    out = []

    def add(row: dict, name: str, finished: bool = True) -> None:
        data = row.get("data") or {}
        params = get_path(data, ("params", PARAMS_FILE, "data")) or {}
        metrics = (
            {file: m.get("data") for file, m in (data.get("metrics") or {}).items() if isinstance(m, dict)}
            if finished
            else {}
        )
        out.append({"name": name, "timestamp": data.get("timestamp"), "params": flatten(params), "metrics": metrics})

    for baseline in exp_show:
        if baseline["rev"] == "workspace":
            continue
        add(baseline, baseline.get("name") or baseline["rev"][:7])
        for exp in baseline.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")  # no executor: a finished experiment kept in git
            for row in exp.get("revs") or []:
                add(row, row.get("name") or exp.get("name") or str(row.get("rev", "?"))[:7], state in (None, "success"))
    return out


def exp_show() -> list:
    """`dvc exp show --json` of the current repository (the experiments of HEAD's commit)."""
    try:
        run = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RecpipeError(
            "dvc not found: install recpipe's environment, or pass --from a saved `dvc exp show --json`"
        ) from None
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no message"])[-1]
        raise RecpipeError(f"dvc exp show --json failed: {last}")
    return json.loads(run.stdout)


def read_exp_show(path: str | Path) -> list:
    """A saved `dvc exp show --json`."""
    path = Path(path)
    if not path.is_file():
        raise RecpipeError(f"{path}: not found (save one with `dvc exp show --json > {path.name}`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RecpipeError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def read_exp_shows(paths) -> list:
    """Saved `dvc exp show --json` outputs as one: their revisions in order, a revision saved in
    several files once with all their experiments (an experiment saved twice counts once, as
    `records`' readers keep one run per seed)."""
    rows, by_rev = [], {}
    for path in paths:
        saved = read_exp_show(path)
        if not isinstance(saved, list):
            raise RecpipeError(
                f"{path}: expected a list of revisions (the output of `dvc exp show --json`), got {type(saved).__name__}"
            )
        for row in saved:
            kept = by_rev.get(row.get("rev")) if isinstance(row, dict) else None
            if kept is None:
                rows.append(row)
                if isinstance(row, dict):
                    by_rev[row.get("rev")] = row
            else:
                kept["experiments"] = (kept.get("experiments") or []) + (row.get("experiments") or [])
    return rows


def reference_params(params_path: str | Path, overrides: list[str]) -> dict:
    """params.yaml's keys, flattened, with `key=value` overrides: the -S of the experiments'
    `dvc exp run` for keys they all changed, beyond the ones a sweep or an ablation varies. The
    file and the overrides are checked as the stages would read them (with datasets.yaml)."""
    import yaml

    from recpipe.params import schema as params
    from recpipe.params.core import REGISTRY

    data = read_mapping(params_path)
    keys = flatten(data)
    registry = params.load(params_path).registry
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key not in keys:
            raise RecpipeError(
                f"--set {item!r}: expected key=value with a dotted key of {params_path} (e.g. train.lr=1e-4)"
            )
        value = yaml.safe_load(text)
        if isinstance(value, str):  # YAML reads 1e-4 as a string; -S writes it as a number
            try:
                value = float(value)
            except ValueError:
                pass
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    if overrides:  # a value of the wrong type: one line naming --set and the key
        params.parse({**data, REGISTRY: registry}, where="--set")
    return flatten(data)


def keep_runs(path: str | Path, runs, report: dict, force: bool = False) -> None:
    """Stop before `report` replaces the report file at `path` when it lacks any run that file
    holds (fewer experiments found: none yet, another commit's, other params), unless `force`.
    `runs(report)`: a report's runs, each a tuple of words that name it."""
    path = Path(path)
    if force or not path.exists():
        return
    how = "pass --force to replace it"
    try:
        held = runs(read_mapping(path))
    except RecpipeError as e:
        raise RecpipeError(f"{e}: {how}") from None
    except (KeyError, TypeError, AttributeError, ValueError):
        raise RecpipeError(
            f"{path}: not a report this command writes, so what replacing it would drop is unknown: {how}"
        ) from None
    dropped = sorted(held - runs(report))
    if dropped:
        shown = ", ".join(" ".join(run) for run in dropped[:3]) + (", ..." if len(dropped) > 3 else "")
        raise RecpipeError(
            f"{path} holds {len(held)} run(s) and the new report would drop {len(dropped)} of them ({shown}): "
            f"aggregate the experiments that hold them (--from a saved `dvc exp show --json`), or {how}"
        )
