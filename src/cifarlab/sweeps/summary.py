"""The record and summary of a Hydra multirun: per-job records, failure isolation, summary.

A sweep is only as useful as its weakest job lets it be: one exception or one diverging lr must not
take the other jobs down, and the result has to be readable without opening every folder.
``SweepCallback`` (configured under ``hydra.callbacks`` in conf/hydra/default.yaml) records each job
in ``<job dir>/job.json``, turns a failed job into a recorded row instead of an exception that ends
the sweep, and rewrites ``summary.csv``/``summary.md`` in the sweep directory as each job starts and
ends. A sweep killed halfway (the OOM killer, a lost node, a time limit) keeps the rows of the jobs
that finished, and its summary lists the jobs that did not (from the sweep's plan in
``multirun.yaml``) with the commands that run them.
``python -m cifarlab.sweeps.summary <sweep dir>`` rewrites the summary by hand.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cifarlab.files import write_atomic, write_json
from cifarlab.review.tables import csv_text, escape, markdown_table
from cifarlab.sweeps import compare
from cifarlab.sweeps.job_files import JOB_RECORD
from cifarlab.sweeps.plan import job_name, read_plan
from cifarlab.sweeps.rows import SUMMARY_COLUMNS, collect
from cifarlab.sweeps.unfinished import not_started_row, unfinished_jobs, unfinished_markdown
from cifarlab.utils import in_multirun, log


@contextlib.contextmanager
def _one_writer(sweep_dir: Path) -> Iterator[None]:
    """Jobs of a parallel launcher (joblib workers, submitit jobs) rewrite the summary from their
    own processes. One at a time, each rebuilding it from the job folders, so the last write holds
    every job that had started or ended before it (an advisory ``flock`` on ``.summary.lock``;
    where ``fcntl`` is missing (Windows) each write is still atomic)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(sweep_dir / ".summary.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if column == "wall_time_s" else f"{value:.4f}"
    return escape(value)


def jobs_markdown(rows: Iterable[Mapping[str, Any]]) -> str:
    """The summary's table of jobs (every column but the folder, which the job number names)."""
    columns = [c for c in SUMMARY_COLUMNS if c != "output_dir"]
    return markdown_table(columns, ([_cell(c, row[c]) for c in columns] for row in rows))


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rewrites summary.csv and summary.md from the job folders and returns the rows."""
    with _one_writer(sweep_dir):
        return _write_summary(sweep_dir)


def _write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    plan = read_plan(sweep_dir)
    started = collect(sweep_dir, plan.swept if plan else None)
    waiting = unfinished_jobs(sweep_dir, plan, started) if plan else []
    rows = started + [not_started_row(w) for w in waiting if w.state == "not started"]
    jobs_csv = csv_text(SUMMARY_COLUMNS, rows)
    failed = sum(row["status"] != "completed" for row in rows)
    title = f"# Sweep {sweep_dir}\n\n{len(rows)} jobs, {failed} not completed. Best first.\n\n"
    text = title + jobs_markdown(rows)
    if compare.varies_seed([Path(row["output_dir"]) for row in started]):
        # one line per setting over its seeds; the per-job rows move to jobs.csv
        settings = compare.group_by_setting(started)
        seeds_text = compare.csv_text(settings)
        write_atomic(sweep_dir / "jobs.csv", lambda tmp: tmp.write_text(jobs_csv))
        write_atomic(sweep_dir / "summary.csv", lambda tmp: tmp.write_text(seeds_text))
        text = (
            f"# Sweep {sweep_dir}\n\n{len(settings)} settings over seeds, best mean "
            f"val/acc_best first.\n\n{compare.markdown(settings)}\n## Jobs\n\n"
            f"{len(rows)} jobs, {failed} not completed. Best first.\n\n{jobs_markdown(rows)}"
        )
    else:
        write_atomic(sweep_dir / "summary.csv", lambda tmp: tmp.write_text(jobs_csv))
    if waiting:
        planned = len(plan.jobs) if plan and plan.jobs is not None else None
        text += "\n" + unfinished_markdown(sweep_dir, waiting, planned)
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
            (cifarlab.sweeps.search) records that trial as failed and goes on.
    """

    def __init__(self, isolate_failures: bool = True) -> None:
        self.isolate_failures = isolate_failures
        self._started = time.perf_counter()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.perf_counter()
        if in_multirun():
            write_summary(Path(config.hydra.sweep.dir))

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
        write_summary(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        write_summary(sweep_dir)
        summary = sweep_dir / "summary.md"
        print(f"\nSweep summary ({summary}):\n\n{summary.read_text()}")


def main(argv: Sequence[str]) -> int:
    """``python -m cifarlab.sweeps.summary <sweep dir>``: rewrites its summary.csv/.md and prints
    it."""
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(
            "usage: python -m cifarlab.sweeps.summary <sweep dir> (e.g. "
            "logs/train/multiruns/<time>): rewrites its summary.csv and summary.md from its job "
            "folders",
            file=sys.stderr,
        )
        return 2
    write_summary(Path(argv[0]))
    print((Path(argv[0]) / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
