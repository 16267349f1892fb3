"""A search's trials: how each job of a trial ended (read from its folder), what a worker records
on each trial, and the trials.csv and search.md that list them all."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cifarlab.files import write_atomic
from cifarlab.review.tables import escape, markdown_table, write_csv
from cifarlab.sweeps.job_files import JOB_RECORD, METRICS_FILE, finite, read_json

# what a worker records on each trial (user attributes, so every worker and the dashboard see them)
RESULT = "result"  # completed | pruned | failed | diverged: the trial's jobs ran to an end
METRIC = "metric"  # the objective metric (mean over seeds); a pruned trial's value when stopped
TEST_ACC = "test/acc"
EPOCHS = "epochs"
WALL_TIME = "wall_time_s"  # the trial's jobs added up
SEEDS = "seeds"
ERROR = "error"
JOB_DIRS = "job_dirs"
NOT_RUN = "not_run"  # asked after other workers had filled n_trials: failed at once, never run


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial takes one of the study's ``n_trials``: one that is running or ran to an
    end does; a failed one without a result (its worker stopped, or it was never run) leaves its
    place to a new trial."""
    return trial.state != TrialState.FAIL or RESULT in trial.user_attrs


@dataclass
class JobOutcome:
    """How one job of a trial ended, from the files it left in its directory."""

    status: str  # completed | pruned | diverged | failed
    value: float | None
    test_acc: float | None
    epochs: int | None
    wall_time_s: float | None
    error: str
    job_dir: Path


def job_outcome(job_dir: Path, metric: str) -> JobOutcome:
    """Reads metrics.json (written by the run) and job.json
    (cifarlab.sweeps.summary.SweepCallback)."""
    metrics = read_json(job_dir / METRICS_FILE)
    record = read_json(job_dir / JOB_RECORD)
    status = str(metrics.get("status", "failed"))
    error = str(record.get("error") or metrics.get("message") or "")
    value = finite(metrics.get(metric))
    if not metrics and not error:
        error = "the job wrote no metrics.json"
    elif status == "completed" and value is None:
        status, error = "failed", f"metrics.json has no finite {metric}"
    elif status not in ("completed", "pruned", "diverged"):
        status = "failed"
    epochs = metrics.get("epochs")
    return JobOutcome(
        status=status,
        value=value,
        test_acc=finite(metrics.get("test/acc")),
        epochs=int(epochs) if isinstance(epochs, (int, float)) else None,
        wall_time_s=finite(record.get("wall_time_s", metrics.get("wall_time_s"))),
        error=error,
        job_dir=job_dir,
    )


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial, or None while no trial completed."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def trial_status(trial: FrozenTrial) -> str:
    if trial.state == TrialState.COMPLETE:
        return "complete"
    if trial.state == TrialState.FAIL:
        return "failed" if RESULT in trial.user_attrs else "failed (its worker stopped)"
    return trial.state.name.lower()  # pruned, running, waiting


def trial_rows(study: optuna.Study, metric: str) -> list[dict[str, Any]]:
    """One row per trial that ran or runs, in trial order; parameters in the search's order."""
    trials = [t for t in study.get_trials(deepcopy=False) if NOT_RUN not in t.user_attrs]
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    rows = []
    for t in trials:
        attrs = t.user_attrs
        error = attrs.get(ERROR) or ""
        if attrs.get(RESULT) == "diverged":
            error = f"diverged: {error}" if error else "diverged"
        dirs = attrs.get(JOB_DIRS) or [""]
        rows.append(
            {
                "number": t.number,
                **{name: t.params.get(name) for name in names},
                "status": trial_status(t),
                metric: attrs.get(METRIC, t.value),
                "test/acc": attrs.get(TEST_ACC),
                "epochs": attrs.get(EPOCHS),
                "wall_time_s": attrs.get(WALL_TIME),
                "seeds": " ".join(str(s) for s in attrs.get(SEEDS) or []),
                "error": error,
                "job_dir": dirs[0],  # the first seed's
            }
        )
    return rows


def _cell(column: str, value: Any, metric: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if column == "wall_time_s":
            return f"{value:.1f}"
        return f"{value:.4f}" if column in (metric, "test/acc") else f"{value:.4g}"
    return escape(value)


def write_results(sweep_dir: Path, study: optuna.Study, metric: str, url: str, retrain: str) -> str:
    """Writes trials.csv and search.md (every trial of the study, from any worker) into the sweep
    directory and returns the markdown."""
    rows = trial_rows(study, metric)
    columns = list(rows[0]) if rows else ["number", "status", metric]
    if not any(row["seeds"] for row in rows):
        columns = [c for c in columns if c != "seeds"]
    write_csv(sweep_dir / "trials.csv", columns, rows)
    states = [row["status"] for row in rows]
    tally = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states)) or "no trials yet"
    best = best_trial(study)
    lines = [
        f"# Search {study.study_name}",
        "",
        f"{study.direction.name.lower()} {metric}; {len(rows)} trials: {tally}.",
        "",
        f"Storage: `{url}`. Browse it: `uvx optuna-dashboard {shlex.quote(url)}`",
        "",
    ]
    if best is not None:
        params = ", ".join(f"{k}={v!r}" for k, v in best.params.items())
        lines += [
            f"Best: trial {best.number}, {metric} {_cell(metric, best.value, metric)} ({params}). "
            "Retrain it:",
            "",
            "```bash",
            retrain,
            "```",
            "",
        ]
    table = markdown_table(columns, ([_cell(c, row[c], metric) for c in columns] for row in rows))
    text = "\n".join(lines) + "\n" + table
    write_atomic(sweep_dir / "search.md", lambda tmp: tmp.write_text(text))
    return text
