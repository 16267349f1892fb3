"""The sweep side of a Hydra multirun: job names, per-job records, failure isolation, summary.

A sweep is only as useful as its weakest job lets it be: one exception or one diverging lr must
not take the other jobs down, and the result has to be readable without opening every folder.
``SweepCallback`` (configured under ``hydra.callbacks`` in conf/hydra/default.yaml) records each
job in ``<job dir>/job.json``, turns a failed job into a recorded row instead of an exception that
ends the sweep, and rewrites ``summary.csv``/``summary.md`` in the sweep directory as each job
starts and ends. A sweep killed halfway (the OOM killer, a lost node, a time limit) keeps the rows
of the jobs that finished, and its summary lists the jobs that did not (from the sweep's plan in
``multirun.yaml``) with the commands that run them. ``python -m cifarlab.sweep <sweep dir>``
rewrites the summary by hand.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shlex
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cifarlab import compare
from cifarlab.run_folders import SWEEP_RECORD
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
    # here, not at the top: Hydra makes this module's callback before train.py's first checks,
    # which answer without loading torch or Lightning (cifarlab.internals loads both)
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


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def job_overrides(job_dir: Path) -> list[str]:
    """The overrides a job was started with (Hydra's .hydra/overrides.yaml)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def job_row(job_dir: Path, swept: set[str] | None = None) -> dict[str, Any]:
    """One summary row from what a job left on disk: metrics.json, job.json, .hydra/overrides,
    provenance.json. ``swept``: the keys that name a job that left no job.json."""
    metrics = _read_json(job_dir / "metrics.json")
    record = _read_json(job_dir / JOB_RECORD)
    overrides = job_overrides(job_dir)
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
    # not at the top, as in read_plan (cifarlab.provenance loads Lightning for its callback)
    from cifarlab.provenance import PROVENANCE_FILE, describe_commit

    name = record.get("name") or (name_from(overrides, swept) if swept else "")
    provenance = _read_json(job_dir / PROVENANCE_FILE)
    return {
        "job": job_dir.name,
        "overrides": name or ",".join(overrides),
        "status": status,
        "val/acc_best": _finite(metrics.get("val/acc_best")),
        "test/acc": _finite(metrics.get("test/acc")),
        "worst_class": worst,
        "worst_class_acc": known.get(worst),
        "wall_time_s": _finite(record.get("wall_time_s", metrics.get("wall_time_s"))),
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


@dataclass
class Unfinished:
    """A job of the sweep that has not finished, and the command that runs it."""

    job: str
    overrides: str
    state: str
    command: str


def _last_checkpoint(job_dir: Path) -> Path:
    """Where a job keeps its latest epoch: the last.ckpt its metrics.json names (an interrupted
    run), else conf/callbacks' ``<job>/checkpoints/last.ckpt``; it may not exist (yet)."""
    named = _read_json(job_dir / "metrics.json").get("last_ckpt")
    return Path(named) if named else job_dir / "checkpoints" / "last.ckpt"


def _start_command(plan: SweepPlan, overrides: Sequence[str], run_dir: Path) -> str:
    config = [f"--config-name={plan.config_name}"] if plan.config_name else []
    return shlex.join([plan.script, *config, *overrides, f"hydra.run.dir={run_dir}"])


def _free_folder(job_dir: Path) -> Path:
    """A new folder beside a job's that never ended, for running that job again from scratch."""
    for n in range(1, 1000):
        candidate = job_dir.with_name(f"{job_dir.name}-rerun{n if n > 1 else ''}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free folder name beside {job_dir}")


def unfinished_jobs(
    sweep_dir: Path, plan: SweepPlan, rows: Sequence[Mapping[str, Any]]
) -> list[Unfinished]:
    """The jobs that have not finished: started and not ended (no job.json, no final
    metrics.json), and, where the plan lists every job, the ones not started. A job counts as
    finished once any folder of the sweep holds a finished run of its overrides (one run again
    by hand counts too).

    The summary is written as jobs start and end, and a job killed later (the OOM killer) writes
    nothing more, so a started job's command decides when it runs: continue from its last.ckpt if
    there is one by then, else run the job again in a new folder beside it."""
    sweep_dir = sweep_dir.resolve()
    started = {Path(r["output_dir"]).name: job_overrides(Path(r["output_dir"])) for r in rows}
    finished = Counter(
        tuple(started[Path(r["output_dir"]).name]) for r in rows if r["status"] in FINISHED
    )
    waiting = []
    for row in rows:
        job_dir = Path(row["output_dir"]).resolve()
        overrides = started[job_dir.name]
        if row["status"] in FINISHED or finished[tuple(overrides)] > 0:
            continue
        ckpt = _last_checkpoint(job_dir).resolve()
        resume = shlex.join([plan.script, f"ckpt_path={ckpt}"])
        if ckpt.is_file():  # a checkpoint is replaced by a newer one, never taken away
            state, command = f"{row['status']}; continues from {ckpt.name}", resume
        else:  # it may still save one (running), or have been stopped before its first
            state = f"{row['status']}; continues from {ckpt.name} once it has one, else runs again"
            again = _start_command(plan, overrides, _free_folder(job_dir))
            command = f"if [ -f {shlex.quote(str(ckpt))} ]; then {resume}; else {again}; fi"
        waiting.append(Unfinished(job_dir.name, row["overrides"], state, command))
    present = Counter(tuple(o) for o in started.values())
    for num, overrides in enumerate(plan.jobs or []):
        if present[tuple(overrides)] > 0:
            present[tuple(overrides)] -= 1
            continue
        name = name_from(overrides, plan.swept) or ",".join(overrides)
        command = _start_command(plan, overrides, sweep_dir / str(num))
        waiting.append(Unfinished(str(num), name, "not started", command))
    return waiting


def not_started_row(job: Unfinished) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS, None)
    return {**row, "job": job.job, "overrides": job.overrides, "status": "not started"}


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
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Iterable[Mapping[str, Any]]) -> str:
    columns = [c for c in SUMMARY_COLUMNS if c != "output_dir"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def unfinished_markdown(sweep_dir: Path, waiting: Sequence[Unfinished], planned: int | None) -> str:
    of = f" of {planned} planned" if planned is not None else ""
    lines = [
        f"## Not finished: {len(waiting)}{of} jobs\n",
        "Still running, or the sweep was stopped before they ended. Each command below runs one "
        "of them into a folder of this sweep (an interrupted job continues from its checkpoint "
        "in its own folder); the last one rewrites this summary with them.\n",
        "| job | overrides | state |",
        "| --- | --- | --- |",
        *(f"| {w.job} | {_cell('overrides', w.overrides)} | {w.state} |" for w in waiting),
        "",
        "```bash",
        *(w.command for w in waiting),
        shlex.join(["python", "-m", "cifarlab.sweep", str(sweep_dir.resolve())]),
        "```",
    ]
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rewrites summary.csv and summary.md from the job folders and returns the rows."""
    with _one_writer(sweep_dir):
        return _write_summary(sweep_dir)


def _write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    plan = read_plan(sweep_dir)
    started = collect(sweep_dir, plan.swept if plan else None)
    waiting = unfinished_jobs(sweep_dir, plan, started) if plan else []
    rows = started + [not_started_row(w) for w in waiting if w.state == "not started"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    failed = sum(row["status"] != "completed" for row in rows)
    title = f"# Sweep {sweep_dir}\n\n{len(rows)} jobs, {failed} not completed. Best first.\n\n"
    text = title + markdown_table(rows)
    if compare.varies_seed([Path(row["output_dir"]) for row in started]):
        # one line per setting over its seeds; the per-job rows move to jobs.csv
        settings = compare.group_by_setting(started)
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
            (cifarlab.search) records that trial as failed and goes on.
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
    """``python -m cifarlab.sweep <sweep dir>``: rewrites its summary.csv/.md and prints it."""
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(
            "usage: python -m cifarlab.sweep <sweep dir> (e.g. logs/train/multiruns/<time>): "
            "rewrites its summary.csv and summary.md from its job folders",
            file=sys.stderr,
        )
        return 2
    write_summary(Path(argv[0]))
    print((Path(argv[0]) / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
