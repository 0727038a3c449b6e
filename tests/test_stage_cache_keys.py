"""Each stage its own cache key: an edit to one step's module, or to one param's description,
makes `dvc status` report only that stage and the stages that read the same code (all downstream
of it) as changed, in a scratch copy of the project with the committed dvc.lock."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from test_dvc_repro import DVC, ENV, ROOT, run


def changed_code(folder: Path) -> dict[str, set[str]]:
    """Stage -> the code deps (recpipe/, stages/) `dvc status` finds modified since dvc.lock."""
    out = subprocess.run([*DVC, "status", "--json"], cwd=folder, capture_output=True, text=True, env=ENV, check=True)
    found = {}
    for stage, changes in json.loads(out.stdout).items():
        for change in changes:
            deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
            code = {
                path for path, how in deps.items() if how == "modified" and path.startswith(("recpipe/", "stages/"))
            }
            if code:
                found[stage] = code
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("project")
    for name in ("recpipe", "stages", "dvc.yaml", "dvc.lock", "params.yaml", "datasets.yaml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, folder / name)
    run(["git", "init", "-q"], folder)
    run([*DVC, "init", "-q"], folder)
    return folder


# (file, text in it, its replacement) -> the stages whose code deps it changes.
EDITS = [
    (
        "recpipe/params/sample.py",
        "How many training samples (shots) to draw for LoRA tuning;",
        "How many training samples to draw;",
        {"sample", "report"},  # report prints the sample section
    ),
    ("recpipe/steps/train.py", "def run(", "# an edit to the train step's wiring\ndef run(", {"train"}),
    ("recpipe/steps/evaluate.py", "def run(", "# an edit to the evaluate step's wiring\ndef run(", {"evaluate"}),
    ("recpipe/params/textualize.py", "a trailing article", "an article at the end", {"textualize@ml-100k"}),
]


@pytest.mark.parametrize("path, old, new, expected", EDITS, ids=[e[0] for e in EDITS])
def test_an_edit_reruns_only_its_own_stages(project, path, old, new, expected):
    before = changed_code(project)  # the copy as committed (empty when dvc.lock is current)
    file = project / path
    text = file.read_text()
    assert old in text, f"{path} no longer has {old!r}: update this test"
    try:
        file.write_text(text.replace(old, new))
        after = changed_code(project)
    finally:
        file.write_text(text)
    stale = {stage for stage, paths in after.items() if paths - before.get(stage, set())}
    assert stale == expected, f"editing {path} changed the code deps of {sorted(stale)}"
