"""recpipe: cached, versioned pipelines for LLM-based recommenders."""

import logging
import sys
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("recpipe")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

log = logging.getLogger("recpipe")


class RecpipeError(Exception):
    """An error caused by bad input (data, params or paths); shown to the user as one line."""


def setup_logging(level: int = logging.INFO) -> None:
    """Send recpipe's log lines to stderr, once."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(level)
