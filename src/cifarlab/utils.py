"""Small helpers every part of cifarlab uses: the log, plain configs, the multirun flag, CPUs."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("cifarlab")


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


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cgroup cpusets, SLURM), which
    ``os.cpu_count()`` ignores; a job given 4 of 64 cores would otherwise start 64 threads."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
