"""One summary row per job of a sweep, from what the job left on disk, best first."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cifarlab.run.provenance import PROVENANCE_FILE, describe_commit
from cifarlab.sweeps.job_files import (
    JOB_RECORD,
    METRICS_FILE,
    finite,
    job_overrides,
    read_json,
)
from cifarlab.sweeps.plan import name_from

SUMMARY_COLUMNS = (
    "job",
    "overrides",
    "status",
    "val/acc_best",
    "test/acc",
    "worst_class",
    "worst_class_acc",
    "wall_time_s",
    "stop_reason",
    "error",
    "commit",
    "output_dir",
)
# completed jobs first, then the ones that ran but are not to be trusted, then the ones that broke,
# then the ones that did not end (interrupted: metrics.json says so; incomplete: it says nothing)
STATUS_ORDER = {
    "completed": 0,
    "pruned": 1,
    "diverged": 2,
    "failed": 3,
    "interrupted": 4,
    "incomplete": 5,
    "not started": 6,
}
FINISHED = ("completed", "pruned", "diverged", "failed")


def job_row(job_dir: Path, swept: set[str] | None = None) -> dict[str, Any]:
    """One summary row from what a job left on disk: metrics.json, job.json, .hydra/overrides,
    provenance.json. ``swept``: the keys that name a job that left no job.json."""
    metrics = read_json(job_dir / METRICS_FILE)
    record = read_json(job_dir / JOB_RECORD)
    overrides = job_overrides(job_dir)
    status, error = record.get("status", "incomplete"), record.get("error", "")
    if metrics:
        status = metrics.get("status", "completed")
        # cifarlab.run.records records divergence itself; a completed run without validation has no
        # val/acc_best, and is still completed unless its test loss is not a number
        test_loss = metrics.get("test/loss")
        if status == "completed" and test_loss is not None and finite(test_loss) is None:
            status = "diverged"
        if status == "diverged" and not error:
            error = "the loss became non-finite (NaN/inf): lr too high?"
    per_class = {k: finite(v) for k, v in (metrics.get("test/acc_class") or {}).items()}
    known = {k: v for k, v in per_class.items() if v is not None}
    worst = min(known, key=known.__getitem__) if known else ""
    name = record.get("name") or (name_from(overrides, swept) if swept else "")
    provenance = read_json(job_dir / PROVENANCE_FILE)
    return {
        "job": job_dir.name,
        "overrides": name or ",".join(overrides),
        "status": status,
        "val/acc_best": finite(metrics.get("val/acc_best")),
        "test/acc": finite(metrics.get("test/acc")),
        "worst_class": worst,
        "worst_class_acc": known.get(worst),
        "wall_time_s": finite(record.get("wall_time_s", metrics.get("wall_time_s"))),
        "stop_reason": metrics.get("stop_reason", ""),
        "error": error,
        "commit": describe_commit(provenance, short=True) if provenance else "",
        "output_dir": str(job_dir),
    }


def _rank(row: Mapping[str, Any]) -> tuple[int, float, float]:
    acc = row["val/acc_best"]
    test = row["test/acc"]
    return (
        STATUS_ORDER.get(row["status"], len(STATUS_ORDER)),
        -acc if acc is not None else math.inf,
        -test if test is not None else math.inf,
    )


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job folder of a sweep: any folder with Hydra's ``.hydra/``."""
    return [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()]


def collect(sweep_dir: Path, swept: set[str] | None = None) -> list[dict[str, Any]]:
    """Rows for every job folder of a sweep, best first."""
    return sorted((job_row(p, swept) for p in job_dirs(sweep_dir)), key=_rank)
