"""The package's shape, read from the code's own imports: the one-way rules between its wings, and
dvc.yaml's code deps covering every recpipe module a stage runs (else DVC keeps results of old code)."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recpipe"


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def path_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports(path: Path, only: ast.AST | None = None) -> set[str]:
    """The recpipe modules a file imports anywhere in it (or inside `only`), with the packages
    that importing them runs (their __init__)."""
    tree = only if only is not None else ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from recpipe.x import y`: y may be a module of its own, or a name in x.
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "recpipe" and path_of(name):
                parts = name.split(".")
                found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if path_of(".".join(parts[:i]))}
    return found


def closure(modules: set[str]) -> set[str]:
    """The modules and all they import, transitively; pipeline.py's imports are counted per step
    (stage_code), not as a whole."""
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += (imports(path_of(module)) if module != "recpipe.pipeline" else set()) - seen
    return seen


def modules_in(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py")) if package else [PACKAGE / f for f in ("params.py", "io.py", "templates.py", "metrics.py")]


@pytest.mark.parametrize(
    "wing, forbidden",
    [
        ("data", ("recpipe.model", "recpipe.tallrec", "recpipe.p5", "recpipe.pipeline", "recpipe.cli")),
        ("model", ("recpipe.tallrec", "recpipe.p5", "recpipe.recsysllm", "recpipe.pipeline", "recpipe.cli")),
        ("recsysllm", ("recpipe.tallrec", "recpipe.p5", "recpipe.pipeline", "recpipe.cli")),
        ("tallrec", ("recpipe.p5", "recpipe.pipeline", "recpipe.cli")),
        ("p5", ("recpipe.tallrec", "recpipe.pipeline", "recpipe.cli")),
    ],
)
def test_wings_import_one_way(wing, forbidden):
    for path in modules_in(wing):
        bad = sorted(m for m in imports(path) if m.startswith(forbidden))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_metrics_imports_no_recpipe_module():
    assert imports(PACKAGE / "metrics.py") == set()


def test_stages_and_cli_reach_the_library_through_pipeline():
    for path in [*sorted((ROOT / "stages").glob("*.py")), PACKAGE / "cli.py"]:
        direct = imports(path) - {"recpipe", "recpipe.pipeline"}
        assert not direct, f"{path.relative_to(ROOT)} imports {sorted(direct)} (go through recpipe.pipeline)"


def stage_code(step: str) -> set[str]:
    """The recpipe modules a stage runs: pipeline's module-level imports, the imports of its step
    function in pipeline.py (and the helpers of pipeline.py it calls), and everything they import."""
    tree = ast.parse((PACKAGE / "pipeline.py").read_text())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
    reached, todo = set(), [step]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo += [n.func.id for n in ast.walk(functions[name]) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions]
    modules = {"recpipe", "recpipe.pipeline"} | imports(PACKAGE / "pipeline.py", top)
    for name in reached:
        modules |= imports(PACKAGE / "pipeline.py", functions[name])
    return closure(modules)


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

    from dvc.repo import Repo
    from dvc.repo.reproduce import plan_repro

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    for name in ("dvc.yaml", "datasets.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["recsysllm"]["datasets"] = params["p5"]["datasets"] = ["ml-100k"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    order = [s.name for s in plan_repro(Repo(str(tmp_path)).index.graph)]
    for stage in ("train", "p5_train@ml-100k", "evaluate", "p5_evaluate@ml-100k"):
        assert order.index("pretrain@ml-100k") < order.index(stage), order
    # Every recsysllm param but the list of datasets to pretrain on (which only adds stages).
    from recpipe.params import RecsysllmParams

    shaping = {f"recsysllm.{key}" for key in RecsysllmParams.model_fields} - {"recsysllm.datasets"}
    for stage in ("train", "p5_train"):
        tracked = set(dvc_stages()[stage]["params"][-len(shaping) :])
        assert tracked == shaping, shaping ^ tracked
