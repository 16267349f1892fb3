"""What a running sweep varies and how its jobs are named, from the multirun.yaml Hydra writes
before the first job starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from cifarlab.run.run_folders import SWEEP_RECORD
from cifarlab.utils import in_multirun


def swept_keys() -> set[str]:
    """Keys the running sweep varies: comma/range overrides of the command line and the keys of
    ``hydra.sweeper.params`` (Optuna's search space). Read from the sweep's multirun.yaml, which
    Hydra writes before the first job starts, so every job of the sweep sees the same set.
    """
    hydra_cfg = HydraConfig.get()
    keys = {str(k) for k in (hydra_cfg.sweeper.get("params") or {})}
    plan = read_plan(Path(hydra_cfg.sweep.dir))
    return keys | (plan.swept if plan else set())


@dataclass
class SweepPlan:
    """What a sweep set out to do, from the multirun.yaml Hydra writes before its first job.

    ``jobs``: every job's overrides in launch order (job ``i`` is ``jobs[i]``), where the sweeper
    decides them up front (Hydra's basic sweeper, a grid); None for sweepers that choose as they
    go (Optuna). ``script``/``config_name``: how to start one of its jobs by hand.
    """

    jobs: list[list[str]] | None
    swept: set[str]
    script: str
    config_name: str | None


def read_plan(sweep_dir: Path) -> SweepPlan | None:
    """What the sweep in ``sweep_dir`` set out to do; None before Hydra wrote its multirun.yaml."""
    # here, not at the top: Hydra makes the sweep callback (cifarlab.sweeps.summary) before
    # train.py's first checks, which answer without loading torch or Lightning (cifarlab.internals
    # loads both)
    from cifarlab.internals import grid_jobs, is_grid_sweeper

    path = sweep_dir / SWEEP_RECORD
    if not path.is_file():
        return None
    saved = OmegaConf.load(path)
    task = [str(o) for o in OmegaConf.select(saved, "hydra.overrides.task", default=[]) or []]
    params = OmegaConf.select(saved, "hydra.sweeper.params", default=None) or {}
    arguments = [*(f"{k}={v}" for k, v in params.items()), *task]
    target = str(OmegaConf.select(saved, "hydra.sweeper._target_", default="") or "")
    name = str(OmegaConf.select(saved, "hydra.job.name", default="train") or "train")
    config_name = OmegaConf.select(saved, "hydra.job.config_name", default=None)
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
        swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
        jobs = grid_jobs(parsed) if is_grid_sweeper(target) else None
    except HydraException:  # e.g. a glob() of config names, which needs Hydra's config loader
        swept, jobs = set(), None
    return SweepPlan(
        jobs=jobs,
        swept=swept | {str(k) for k in params},
        script=f"{name}.py",
        config_name=str(config_name) if config_name and config_name != name else None,
    )


def name_from(overrides: Sequence[str], keys: set[str]) -> str:
    """A job's name from its overrides: the swept ones, sorted (as ``job_name`` names it)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    chosen = sorted(o.input_line for o in parsed if o.get_key_element() in keys)
    return ",".join(chosen).replace("/", "_")


def job_name() -> str:
    """What sets this job apart, as one path-safe name: ``model.width=32,optimizer.lr=0.01``.

    It names the job's TensorBoard run and its summary row, so ``tensorboard --logdir <sweep dir>``
    lists jobs by what they changed. Only swept keys count; without any (a one-job multirun) it is
    Hydra's ``override_dirname``, which leaves out the setup keys (cifarlab.config.SETUP_KEYS).
    Empty outside a multirun, where one run needs no name.
    """
    if not in_multirun():
        return ""
    job = HydraConfig.get().job
    name = name_from(list(HydraConfig.get().overrides.task), swept_keys())
    return name or job.override_dirname.replace("/", "_") or f"job{job.num}"
