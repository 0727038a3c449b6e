"""The package's shape, read from the code's own imports: the one-way rules between its parts, and
dvc.yaml's code deps covering every recpipe module a stage runs (else DVC keeps results of old code).

The parts, from the ground up (MAY_IMPORT says what each may import):
- recpipe/__init__.py: RecpipeError and the log, which every part may use.
- ground: the other top-level modules but cli (io, templates, metrics, pip, markdown, experiments,
  ablations) and the params package: helpers and params models every wing may use; they import no wing.
- data and model: two wings on the ground that know nothing of each other (the model no dataset,
  the data no model).
- recsysllm: a pretraining method, built on data and model.
- collab: collaborative encoders (BPR-MF, SASRec) and their training, built on data alone (no LLM).
- tallrec and p5: the tasks, built on data, model and collab. Neither imports the other, nor
  recsysllm: a pretrained model reaches a task through its step, which passes it in.
- steps: one module a pipeline step, wiring the wings together; stages/ reach the library through
  it alone, and the CLI through it and the ground.
No module uses another's private (`_name`) names: a helper two modules need is made public where
both can see it."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recpipe"
WINGS = ("data", "model", "recsysllm", "collab", "tallrec", "p5")
MAY_IMPORT = {
    "recpipe": set(),
    "ground": {"recpipe", "ground"},
    "data": {"recpipe", "ground", "data"},
    "model": {"recpipe", "ground", "model"},
    "recsysllm": {"recpipe", "ground", "data", "model", "recsysllm"},
    "collab": {"recpipe", "ground", "data", "collab"},
    "tallrec": {"recpipe", "ground", "data", "model", "collab", "tallrec"},
    "p5": {"recpipe", "ground", "data", "model", "collab", "p5"},
    "steps": {"recpipe", "ground", *WINGS, "steps"},
    "cli": {"recpipe", "ground", *WINGS, "steps"},
    "stages": {"recpipe", "steps"},
}
CHECKED = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "stages").glob("*.py"))


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def path_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def part_of(path: Path) -> str:
    """recpipe/<wing>/... -> the wing; recpipe/steps/... -> steps; recpipe/__init__.py -> recpipe;
    cli.py -> cli; recpipe/params/... and any other top-level module -> ground; stages/*.py -> stages."""
    rel = path.relative_to(ROOT).parts
    if rel[0] != "recpipe":
        return rel[0]
    if len(rel) > 2:
        return "ground" if rel[1] == "params" else rel[1]
    return {"__init__.py": "recpipe", "cli.py": "cli"}.get(rel[1], "ground")


def imported_from(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module of `from X import ...` in path: `from .x` and `from ..` resolved
    against the file's package."""
    if not node.level:
        return node.module
    package = module_of(path).split(".")[: None if path.name == "__init__.py" else -1]
    anchor = package[: len(package) - node.level + 1]
    return ".".join(anchor + ([node.module] if node.module else []))


def imports(path: Path, only: ast.AST | None = None) -> set[str]:
    """The recpipe modules a file imports anywhere in it (or inside `only`), with the packages
    that importing them runs (their __init__)."""
    tree = only if only is not None else ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from recpipe.x import y`: y may be a module of its own, or a name in x.
            module = imported_from(node, path)
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "recpipe" and path_of(name):
                parts = name.split(".")
                found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if path_of(".".join(parts[:i]))}
    return found


def private_names_used(path: Path) -> list[str]:
    """`from recpipe.x import _y`, and `x._y` on an imported recpipe module x, in path."""

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    tree = ast.parse(path.read_text())
    used, modules = [], {}  # modules: the name a recpipe module is bound to -> the module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name: a.name for a in node.names if a.name.split(".")[0] == "recpipe"}
        elif isinstance(node, ast.ImportFrom) and imported_from(node, path).split(".")[0] == "recpipe":
            module = imported_from(node, path)
            modules |= {a.asname or a.name: f"{module}.{a.name}" for a in node.names if path_of(f"{module}.{a.name}")}
            used += [f"{module}.{a.name}" for a in node.names if private(a.name)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and ast.unparse(node.value) in modules:
            used.append(f"{modules[ast.unparse(node.value)]}.{node.attr}")
    return used


def closure(modules: set[str]) -> set[str]:
    """The modules and all they import, transitively."""
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += imports(path_of(module)) - seen
    return seen


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_parts_import_one_way(path):
    part = part_of(path)
    assert part in MAY_IMPORT, f"{path.relative_to(ROOT)}: its part {part!r} has no rule in MAY_IMPORT"
    bad = sorted(f"{m} ({part_of(path_of(m))})" for m in imports(path) if part_of(path_of(m)) not in MAY_IMPORT[part])
    allowed = sorted(MAY_IMPORT[part])
    assert not bad, f"{path.relative_to(ROOT)} ({part}) imports {bad}; {part} may import only {allowed}"


def test_every_rule_is_for_a_part_that_exists():
    # A renamed or removed part would leave a rule that checks nothing.
    parts = {part_of(path) for path in CHECKED}
    assert set(MAY_IMPORT) <= parts, f"rules for parts that do not exist: {sorted(set(MAY_IMPORT) - parts)}"
    assert set().union(*MAY_IMPORT.values()) <= set(MAY_IMPORT)


def test_metrics_imports_no_recpipe_module():
    found = imports(PACKAGE / "metrics.py")
    assert not found, f"recpipe/metrics.py imports {sorted(found)}: the metrics stand on their own"


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_uses_another_modules_private_names(path):
    used = private_names_used(path)
    assert not used, f"{path.relative_to(ROOT)} uses {used}: make it public where both can see it"


def test_the_import_finder_resolves_relative_imports():
    code = "from ..recsysllm import corpus\nfrom . import formats\nfrom .splits import draw\nfrom .. import io"
    found = imports(PACKAGE / "data" / "ingest.py", ast.parse(code))
    assert {"recpipe.recsysllm.corpus", "recpipe.data.formats", "recpipe.data.splits", "recpipe.io"} <= found
    assert "recpipe.data.splits" in imports(PACKAGE / "data" / "__init__.py", ast.parse("from .splits import draw"))


def stage_code(step: str) -> set[str]:
    """The recpipe modules a stage runs: what stages/<step>.py imports, and everything they import
    (lazy imports inside functions too)."""
    return closure({"recpipe"} | imports(ROOT / "stages" / f"{step}.py"))


def dvc_stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_dvc_deps_cover_every_module_the_stage_runs(stage):
    spec = dvc_stages()[stage]
    step = spec["cmd"].split()[1].removeprefix("stages/").removesuffix(".py")
    deps = [d for d in spec["deps"] if "$" not in d or d.startswith("recpipe/")]
    assert f"stages/{step}.py" in deps, f"{stage}: its script stages/{step}.py is not a dep"

    def covered(path: Path) -> bool:
        rel = path.relative_to(ROOT).as_posix()
        return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)

    missing = sorted(path_of(m).relative_to(ROOT).as_posix() for m in stage_code(step) if not covered(path_of(m)))
    assert not missing, f"dvc.yaml stage {stage!r} runs {missing} but does not list them in its deps"


def test_the_dependency_finder_sees_lazy_imports():
    # model.train loads the model inside train(): that import must count.
    assert "recpipe.model.load" in imports(PACKAGE / "model" / "train.py")
    assert {"recpipe.model.train", "recpipe.tallrec.evaluate"} <= stage_code("train")
    assert not any(m.startswith("recpipe.model") for m in stage_code("ingest"))


def test_pretraining_runs_before_the_fine_tuning_that_starts_from_it(tmp_path):
    """The fine-tuning stages cannot depend on the optional pretrained folder: they track the
    recsysllm params (but the list of datasets to pretrain on, which adds stages and changes no
    pretraining), and DVC must run pretrain@<d> first (stages that do not depend on each other
    run in dvc.yaml's order), so that an experiment switching a pretraining param retrains on the
    new pretraining."""
    import shutil
    import subprocess
    import sys

    from dvc.repo import Repo
    from dvc.repo.reproduce import plan_repro

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    for name in ("dvc.yaml", "datasets.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["recsysllm"]["datasets"] = params["p5"]["datasets"] = ["ml-100k"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    order = [s.name for s in plan_repro(Repo(str(tmp_path)).index.graph)]
    for stage in ("train", "p5_train@ml-100k", "evaluate", "p5_evaluate@ml-100k"):
        assert order.index("pretrain@ml-100k") < order.index(stage), order
    # Every recsysllm param but the list of datasets to pretrain on (which only adds stages).
    from recpipe.params.recsysllm import RecsysllmParams

    shaping = {f"recsysllm.{key}" for key in RecsysllmParams.model_fields} - {"recsysllm.datasets"}
    for stage in ("train", "p5_train"):
        tracked = {key for key in dvc_stages()[stage]["params"] if str(key).startswith("recsysllm.")}
        assert tracked == shaping, shaping ^ tracked
