"""The jobs of a sweep that have not finished, and the command that runs each of them."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarlab.review.tables import escape, markdown_table
from cifarlab.sweeps.job_files import METRICS_FILE, job_overrides, read_json
from cifarlab.sweeps.plan import SweepPlan, name_from
from cifarlab.sweeps.rows import FINISHED, SUMMARY_COLUMNS


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
    named = read_json(job_dir / METRICS_FILE).get("last_ckpt")
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


def unfinished_markdown(sweep_dir: Path, waiting: Sequence[Unfinished], planned: int | None) -> str:
    """The summary's section on the jobs not finished, with the commands that finish them and
    then rewrite the summary."""
    of = f" of {planned} planned" if planned is not None else ""
    table = markdown_table(
        ["job", "overrides", "state"], ([w.job, escape(w.overrides), w.state] for w in waiting)
    )
    lines = [
        f"## Not finished: {len(waiting)}{of} jobs\n",
        "Still running, or the sweep was stopped before they ended. Each command below runs one "
        "of them into a folder of this sweep (an interrupted job continues from its checkpoint "
        "in its own folder); the last one rewrites this summary with them.\n",
        table,
        "```bash",
        *(w.command for w in waiting),
        shlex.join(["python", "-m", "cifarlab.sweeps.summary", str(sweep_dir.resolve())]),
        "```",
    ]
    return "\n".join(lines) + "\n"
