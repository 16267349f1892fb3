"""The sweep side of a Hydra multirun: job names, per-job records, failure isolation, summary.

A sweep is only as useful as its weakest job lets it be: one exception or one diverging lr must
not take the other jobs down, and the result has to be readable without opening every folder.
``SweepCallback`` (configured under ``hydra.callbacks`` in conf/hydra/default.yaml) records each
job in ``<job dir>/job.json``, turns a failed job into a recorded row instead of an exception that
ends the sweep, and writes ``summary.csv``/``summary.md`` into the sweep directory at the end.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cifarlab import compare
from cifarlab.utils import in_multirun, log, write_atomic, write_json

JOB_RECORD = "job.json"
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
    "output_dir",
)
# completed jobs first, then the ones that ran but are not to be trusted, then the ones that broke
STATUS_ORDER = {"completed": 0, "pruned": 1, "diverged": 2, "failed": 3, "incomplete": 4}


def swept_keys() -> set[str]:
    """Keys the running sweep varies: comma/range overrides of the command line and the keys of
    ``hydra.sweeper.params`` (Optuna's search space). Read from the sweep's multirun.yaml, which
    Hydra writes before the first job starts, so every job of the sweep sees the same set.
    """
    hydra_cfg = HydraConfig.get()
    keys = {str(k) for k in (hydra_cfg.sweeper.get("params") or {})}
    multirun = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
    if multirun.is_file():
        task = OmegaConf.load(multirun).hydra.overrides.task
        parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
        keys |= {o.get_key_element() for o in parsed if o.is_sweep_override()}
    return keys


def job_name() -> str:
    """What sets this job apart, as one path-safe name: ``model.width=32,optimizer.lr=0.01``.

    It names the job's TensorBoard run and its summary row, so ``tensorboard --logdir <sweep dir>``
    lists jobs by what they changed. Only swept keys count; without any (a one-job multirun) it is
    Hydra's ``override_dirname``, which leaves out the setup keys listed in conf/hydra/default.yaml.
    Empty outside a multirun, where one run needs no name.
    """
    if not in_multirun():
        return ""
    job = HydraConfig.get().job
    keys = swept_keys()
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    chosen = sorted(o.input_line for o in overrides if o.get_key_element() in keys)
    name = ",".join(chosen) if chosen else job.override_dirname
    return name.replace("/", "_") or f"job{job.num}"


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def job_row(job_dir: Path) -> dict[str, Any]:
    """One summary row from what a job left on disk: metrics.json, job.json, .hydra/overrides."""
    metrics = _read_json(job_dir / "metrics.json")
    record = _read_json(job_dir / JOB_RECORD)
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else []
    status, error = record.get("status", "incomplete"), record.get("error", "")
    if metrics:
        status = metrics.get("status", "completed")
        # run.py records divergence itself; a completed run without validation has no
        # val/acc_best, and is still completed unless its test loss is not a number
        test_loss = metrics.get("test/loss")
        if status == "completed" and test_loss is not None and _finite(test_loss) is None:
            status = "diverged"
        if status == "diverged" and not error:
            error = "the loss became non-finite (NaN/inf): lr too high?"
    per_class = {k: _finite(v) for k, v in (metrics.get("test/acc_class") or {}).items()}
    known = {k: v for k, v in per_class.items() if v is not None}
    worst = min(known, key=known.__getitem__) if known else ""
    return {
        "job": job_dir.name,
        "overrides": record.get("name") or ",".join(str(o) for o in overrides),
        "status": status,
        "val/acc_best": _finite(metrics.get("val/acc_best")),
        "test/acc": _finite(metrics.get("test/acc")),
        "worst_class": worst,
        "worst_class_acc": known.get(worst),
        "wall_time_s": _finite(record.get("wall_time_s", metrics.get("wall_time_s"))),
        "stop_reason": metrics.get("stop_reason", ""),
        "error": error,
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


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rows for every job folder of a sweep (any folder with Hydra's ``.hydra/``), best first."""
    jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()]
    return sorted((job_row(p) for p in jobs), key=_rank)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if column == "wall_time_s" else f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Iterable[Mapping[str, Any]]) -> str:
    columns = [c for c in SUMMARY_COLUMNS if c != "output_dir"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Writes summary.csv and summary.md into the sweep directory and returns the rows."""
    rows = collect(sweep_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    failed = sum(row["status"] != "completed" for row in rows)
    title = f"# Sweep {sweep_dir}\n\n{len(rows)} jobs, {failed} not completed. Best first.\n\n"
    text = title + markdown_table(rows)
    if compare.varies_seed([Path(row["output_dir"]) for row in rows]):
        # one line per setting over its seeds; the per-job rows move to jobs.csv
        settings = compare.group_by_setting(rows)
        seeds_text = compare.csv_text(settings)
        write_atomic(sweep_dir / "jobs.csv", lambda tmp: tmp.write_text(buffer.getvalue()))
        write_atomic(sweep_dir / "summary.csv", lambda tmp: tmp.write_text(seeds_text))
        text = (
            f"# Sweep {sweep_dir}\n\n{len(settings)} settings over seeds, best mean "
            f"val/acc_best first.\n\n{compare.markdown(settings)}\n## Jobs\n\n"
            f"{len(rows)} jobs, {failed} not completed. Best first.\n\n{markdown_table(rows)}"
        )
    else:
        write_atomic(sweep_dir / "summary.csv", lambda tmp: tmp.write_text(buffer.getvalue()))
    write_atomic(sweep_dir / "summary.md", lambda tmp: tmp.write_text(text))
    return rows


def job_error(job_return: JobReturn) -> BaseException:
    """The exception a failed job raised. Hydra's public ``JobReturn.return_value`` re-raises it
    (after writing "Error executing job with overrides: ..." to stderr, which Hydra prints itself
    where the error ends the sweep; ours is logged instead, so that line is held back)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            job_return.return_value  # noqa: B018 (the property raises the job's exception)
    except Exception as err:
        return err
    raise ValueError(f"job {job_return.overrides} did not fail")


class SweepCallback(Callback):
    """Hydra callback: records every job of a multirun and summarizes the sweep at its end.

    Args:
        isolate_failures: a job that raises is recorded as ``failed`` (with its message) and
            reported to the sweeper as a job that returned nothing, so Hydra's sweeper goes on with
            the remaining jobs instead of re-raising the first error. A search
            (cifarlab.search) records that trial as failed and goes on.
    """

    def __init__(self, isolate_failures: bool = True) -> None:
        self.isolate_failures = isolate_failures
        self._started = time.perf_counter()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not in_multirun():
            return
        failed = job_return.status == JobStatus.FAILED
        record: dict[str, Any] = {
            "status": "failed" if failed else "completed",
            "name": job_name(),
            "overrides": list(job_return.overrides or []),
            "wall_time_s": round(time.perf_counter() - self._started, 2),
            "error": "",
        }
        if failed:
            err = job_error(job_return)
            record["error"] = f"{type(err).__name__}: {err}"
            record["traceback"] = "".join(traceback.format_exception(err))
            log.error("Job %s failed: %s", record["name"], record["error"])
        write_json(Path(HydraConfig.get().runtime.output_dir) / JOB_RECORD, record)
        if failed and self.isolate_failures:
            job_return.status = JobStatus.COMPLETED
            job_return.return_value = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        write_summary(sweep_dir)
        summary = sweep_dir / "summary.md"
        print(f"\nSweep summary ({summary}):\n\n{summary.read_text()}")
