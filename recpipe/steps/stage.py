"""How stages/<step>.py runs a step under DVC: it reads only the step's own params sections, and
bad input ends it with one line on stderr and exit code 1."""

import os
import sys
from operator import attrgetter
from types import ModuleType

from recpipe import RecpipeError, setup_logging
from recpipe.params import core


def main(step: ModuleType) -> None:
    """Run `step` (a module of recpipe.steps). A step run once per dataset (its FOR_EACH names the
    params key that lists them) takes the dataset's name as its one argument or, under DVC, from
    the stage's name in DVC_STAGE (`download@ml-100k`), so that dvc.yaml passes no name through a shell."""
    setup_logging()
    name = step.__name__.rpartition(".")[2]
    try:
        p = core.load(step.StepParams)
        if step.FOR_EACH is None:
            step.run(p)
            return
        allowed = attrgetter(step.FOR_EACH)(p)
        args = sys.argv[1:] or [os.environ.get("DVC_STAGE", "").partition("@")[2]]
        if len(args) != 1 or args[0] not in allowed:
            raise RecpipeError(f"usage: {name}.py <dataset>, one of {step.FOR_EACH}: {list(allowed)}")
        step.run(p, args[0])
    except RecpipeError as e:
        print(f"error: {name}: {e}", file=sys.stderr)
        sys.exit(1)
