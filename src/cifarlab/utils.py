"""Small helpers every part of cifarlab uses: the log, plain configs, the multirun flag, CPUs."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cifarlab.errors import CifarlabError

log = logging.getLogger("cifarlab")
T = TypeVar("T")


def to_plain_dict(cfg: DictConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """A config node as plain dicts and lists, the only form checkpoints and loggers should hold."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def in_multirun() -> bool:
    """True inside a job of ``train.py -m``; sweep-only behaviour keys off this."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_entry(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Runs an entry point's task; a user mistake becomes one paragraph on stderr and exit code 2.

    ``HYDRA_FULL_ERROR=1`` keeps the full traceback for debugging. In a multirun the error is
    raised instead, so Hydra records this one job as failed and the sweep goes on
    (cifarlab.sweep.SweepCallback writes its message into the sweep summary).
    """
    try:
        return task(cfg)
    except CifarlabError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or in_multirun():
            raise
        print(f"\nerror: {err}\n", file=sys.stderr)
        sys.exit(2)


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cgroup cpusets, SLURM), which
    ``os.cpu_count()`` ignores; a job given 4 of 64 cores would otherwise start 64 threads."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
