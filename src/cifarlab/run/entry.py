"""How an entry point (train.py, eval.py, predict.py, export.py) runs its task: a mistake in the
input is one paragraph and exit code 2, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig

from cifarlab.errors import CifarlabError
from cifarlab.utils import in_multirun

T = TypeVar("T")


def run_entry(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Runs an entry point's task; a user mistake becomes one paragraph on stderr and exit code 2.

    ``HYDRA_FULL_ERROR=1`` keeps the full traceback for debugging. In a multirun the error is
    raised instead, so Hydra records this one job as failed and the sweep goes on
    (cifarlab.sweeps.summary.SweepCallback writes its message into the sweep summary).
    """
    try:
        return task(cfg)
    except CifarlabError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or in_multirun():
            raise
        print(f"\nerror: {err}\n", file=sys.stderr)
        sys.exit(2)
