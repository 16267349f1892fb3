"""Hyperparameter search: one Optuna study, shared by every worker that runs the same command.

``train.py -m hparams_search=NAME`` makes this process a worker of the study named
``hydra.sweeper.study_name`` in ``hydra.sweeper.storage`` (hydra_plugins/cifarlab_search.py is
the Hydra plugin that starts it). A worker asks the study for a trial only when it is about to
run one, runs the trial's job(s) through Hydra's launcher (so every launcher works: in-process,
joblib, SLURM), and tells the study how they ended, read from the jobs' metrics.json. The study,
not the worker, counts the trials, so any number of workers started with the same command share
``n_trials`` between them, and starting the command again continues the study.

After every trial the sweep directory gets ``trials.csv`` and ``search.md``: every trial of the
study with its parameters, status and metric, the best trial's ``train.py`` line and the
optuna-dashboard command.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shlex
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState

from cifarlab.errors import CifarlabError
from cifarlab.files import write_atomic
from cifarlab.utils import log

DISTRIBUTIONS: dict[str, type[BaseDistribution]] = {
    "float": FloatDistribution,
    "int": IntDistribution,
    "categorical": CategoricalDistribution,
}
SPACE_EXAMPLE = (
    "e.g. optimizer.lr: {type: float, low: 1.0e-4, high: 0.3, log: true}, "
    "model.width: {type: int, low: 8, high: 64, step: 8} or "
    "model.width: {type: categorical, choices: [8, 16, 32]}"
)
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
HEARTBEAT = "heartbeat"  # journal storages: when this trial's worker last said it was alive


def search_space(params: Mapping[str, Any] | None) -> dict[str, BaseDistribution]:
    """``hydra.sweeper.params`` as Optuna distributions, checked before any trial starts."""
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=True)  # type: ignore[assignment]
    if not params:
        raise CifarlabError(
            "hydra.sweeper.params is empty: a search needs at least one parameter "
            f"({SPACE_EXAMPLE})."
        )
    return {str(key): distribution(str(key), spec) for key, spec in params.items()}


def distribution(key: str, spec: Any) -> BaseDistribution:
    """One entry of the search space: ``{type: float|int|categorical, ...}`` whose other keys are
    those of Optuna's FloatDistribution (low, high, log, step), IntDistribution (the same) or
    CategoricalDistribution (choices)."""
    if not isinstance(spec, Mapping) or spec.get("type") not in DISTRIBUTIONS:
        raise CifarlabError(
            f"hydra.sweeper.params.{key}={spec!r} must be a mapping whose type is float, int or "
            f"categorical ({SPACE_EXAMPLE})."
        )
    args = {k: v for k, v in spec.items() if k != "type"}
    if "choices" in args:
        args["choices"] = tuple(args["choices"] or ())
    try:
        return DISTRIBUTIONS[spec["type"]](**args)
    except (TypeError, ValueError) as err:
        raise CifarlabError(
            f"hydra.sweeper.params.{key}={dict(spec)} is not a valid {spec['type']} range: {err} "
            f"({SPACE_EXAMPLE})."
        ) from None


def suggest(trial: Trial, name: str, space: BaseDistribution) -> Any:
    """The trial's value for one parameter, through Optuna's public suggest API."""
    if isinstance(space, FloatDistribution):
        return trial.suggest_float(name, space.low, space.high, step=space.step, log=space.log)
    if isinstance(space, IntDistribution):
        return trial.suggest_int(name, space.low, space.high, step=space.step, log=space.log)
    assert isinstance(space, CategoricalDistribution)
    return trial.suggest_categorical(name, space.choices)


def override(key: str, value: Any) -> str:
    """``key=value`` that Hydra's command line reads back as exactly ``value`` (quoted when a
    plain form would read as something else, e.g. the string "32" or "null")."""
    if value is None or isinstance(value, bool):
        return f"{key}={str(value).lower() if value is not None else 'null'}"
    plain = f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
    try:
        if OverridesParser.create().parse_override(plain).value() == value:
            return plain
    except Exception:  # any parse error: the quoted form below
        pass
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{escaped}'"


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The configured storage, or by default a SQLite file in the sweep directory."""
    if storage:
        return str(storage)
    return f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}"


def open_storage(
    url: str, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> BaseStorage:
    """An RDB URL (``sqlite:///study.db``, ``postgresql://user@host/db``) gives Optuna's
    RDBStorage, with its heartbeat when ``heartbeat_interval`` is set; anything else is the path
    of a journal file (``JournalFileBackend``, for a file system that several nodes share)."""
    try:
        if "://" not in url:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(url))
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return _rdb_storage(url, heartbeat_interval, grace_period)
    except Exception as err:  # a wrong URL, a missing database driver, an unreachable server
        raise CifarlabError(
            f"hydra.sweeper.storage={url!r} could not be opened ({type(err).__name__}: {err}). "
            "Give an SQLAlchemy URL (sqlite:///search.db; postgresql://user:password@host/db with "
            "its driver installed) or the path of a journal file (search.journal)."
        ) from err


def _rdb_storage(url: str, heartbeat_interval: int | None, grace_period: int | None) -> RDBStorage:
    """RDBStorage, tried again when workers started together race to create the tables of a new
    database: Optuna creates them unguarded (optuna/optuna#1092), and the loser of the race fails
    on the table or version row the winner just made, which the next try finds in place."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # the heartbeat's
                return RDBStorage(
                    url, heartbeat_interval=heartbeat_interval, grace_period=grace_period
                )
        except (IntegrityError, OperationalError, ProgrammingError):
            if attempt == attempts:
                raise
            time.sleep(0.5 * attempt)


def trial_id(storage: BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` of a study (Optuna's trial objects keep it private)."""
    study_id = storage.get_study_id_from_name(study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial takes one of the study's ``n_trials``: one that is running or ran to an
    end does; a failed one without a result (its worker stopped, or it was never run) leaves its
    place to a new trial."""
    return trial.state != TrialState.FAIL or RESULT in trial.user_attrs


class Heartbeat:
    """Keeps this worker's running trials marked alive, and fails trials whose worker stopped.

    RDB storages (SQLite, PostgreSQL, ...) have Optuna's heartbeat: ``RDBStorage.record_heartbeat``
    and ``optuna.storages.fail_stale_trials``, timed by the database's clock. Optuna beats only
    inside ``Study.optimize``; a worker that asks and tells beats itself. The journal storage has
    no heartbeat, so there the beat is the trial's user attribute ``heartbeat`` (seconds since the
    epoch on the worker's clock) and stale trials are failed here alike.
    """

    def __init__(
        self, study: optuna.Study, storage: BaseStorage, interval: int, grace_period: int
    ) -> None:
        self.study, self.storage = study, storage
        self.interval, self.grace_period = interval, grace_period

    def beat(self, ids: Sequence[int]) -> None:
        for tid in ids:
            try:
                if isinstance(self.storage, RDBStorage):
                    self.storage.record_heartbeat(tid)
                else:
                    self.storage.set_trial_user_attr(tid, HEARTBEAT, time.time())
            except UpdateFinishedTrialError:
                pass  # another worker failed it meanwhile; telling it is then skipped

    @contextlib.contextmanager
    def beating(self, ids: Sequence[int]) -> Iterator[None]:
        """Beats now and every ``interval`` seconds until the block ends."""
        self.beat(ids)
        done = threading.Event()

        def keep_beating() -> None:
            while not done.wait(self.interval):
                self.beat(ids)

        thread = threading.Thread(target=keep_beating, name="search-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def fail_stale(self) -> list[int]:
        """Fails the running trials not beaten for ``grace_period`` seconds; their numbers."""
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if isinstance(self.storage, RDBStorage):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
        else:
            now = time.time()
            for trial in running:
                start = trial.datetime_start.timestamp() if trial.datetime_start else now
                if now - float(trial.user_attrs.get(HEARTBEAT, start)) > self.grace_period:
                    tid = trial_id(self.storage, self.study.study_name, trial.number)
                    with contextlib.suppress(UpdateFinishedTrialError):
                        self.storage.set_trial_state_values(tid, TrialState.FAIL)
        now_trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        stale = [t.number for t in running if not counts(now_trials[t.number])]
        for number in stale:
            log.warning("Trial %d failed: its worker stopped (no heartbeat)", number)
        return stale


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def job_outcome(job_dir: Path, metric: str) -> JobOutcome:
    """Reads metrics.json (written by the run) and job.json (cifarlab.sweep.SweepCallback)."""
    metrics = _read_json(job_dir / "metrics.json")
    record = _read_json(job_dir / "job.json")
    status = str(metrics.get("status", "failed"))
    error = str(record.get("error") or metrics.get("message") or "")
    value = _finite(metrics.get(metric))
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
        test_acc=_finite(metrics.get("test/acc")),
        epochs=int(epochs) if isinstance(epochs, (int, float)) else None,
        wall_time_s=_finite(record.get("wall_time_s", metrics.get("wall_time_s"))),
        error=error,
        job_dir=job_dir,
    )


@dataclass
class RunningTrial:
    """A trial this worker asked for, and what its jobs returned so far."""

    trial: Trial
    outcomes: list[JobOutcome]


class Search:
    """One worker of a study: the loop of ask, launch, tell; settings as in
    conf/hydra/sweeper/optuna.yaml (``report`` is read by the jobs themselves,
    cifarlab.callbacks.trial_pruning, from the same config)."""

    def __init__(
        self,
        *,
        config: DictConfig,
        launcher: Launcher,
        sampler: optuna.samplers.BaseSampler,
        pruner: optuna.pruners.BasePruner,
        study_name: str,
        storage: str | None,
        metric: str,
        direction: str,
        report: str,
        n_trials: int,
        n_jobs: int,
        n_seeds: int,
        heartbeat_interval: int,
        grace_period: int,
        params: Mapping[str, Any] | None,
    ) -> None:
        for name, value in (
            ("n_trials", n_trials),
            ("n_jobs", n_jobs),
            ("n_seeds", n_seeds),
            ("heartbeat_interval", heartbeat_interval),
            ("grace_period", grace_period),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CifarlabError(f"hydra.sweeper.{name}={value!r} must be a whole number >= 1.")
        if direction not in ("maximize", "minimize"):
            raise CifarlabError(
                f"hydra.sweeper.direction={direction!r} must be maximize or minimize."
            )
        self.config, self.launcher = config, launcher
        self.sampler, self.pruner = sampler, pruner
        self.study_name, self.metric, self.direction = str(study_name), str(metric), direction
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.seeds = [int(config.seed) + i for i in range(n_seeds)]
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.space = search_space(params)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.url = storage_url(storage, self.sweep_dir)
        self.job_idx = 0

    def run(self, arguments: list[str]) -> optuna.Study:
        """Runs trials until the study holds ``n_trials`` of them; returns the study."""
        self.arguments = self._check_arguments(arguments)
        storage = open_storage(self.url, self.heartbeat_interval, self.grace_period)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        if study.direction.name.lower() != self.direction:
            raise CifarlabError(
                f"Study {self.study_name!r} in {self.url} was started to "
                f"{study.direction.name.lower()} its objective, not to {self.direction}: give "
                "hydra.sweeper.direction as it was, or a new hydra.sweeper.study_name."
            )
        self.study, self.storage = study, storage
        heartbeat = Heartbeat(study, storage, self.heartbeat_interval, self.grace_period)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.sweep_dir / "multirun.yaml", lambda tmp: OmegaConf.save(self.config, tmp))
        log.info(
            "Study %s in %s: %d trials so far, %s %s over %s, up to %d trials",
            self.study_name,
            self.url,
            len(study.trials),
            self.direction,
            self.metric,
            ", ".join(self.space),
            self.n_trials,
        )
        while True:
            heartbeat.fail_stale()
            free = self.n_trials - sum(counts(t) for t in study.get_trials(deepcopy=False))
            asked = [self._ask() for _ in range(min(self.n_jobs, max(free, 0)))]
            trials = [t for t in asked if t is not None]
            if not trials:
                break
            with heartbeat.beating([trial_id(storage, self.study_name, t.number) for t in trials]):
                self._run_trials(trials)
            self.write_results()
        text = self.write_results()
        print(f"\nSearch results ({self.sweep_dir / 'search.md'}):\n\n{text}")
        return study

    def write_results(self) -> str:
        retrain = self.retrain_line(self.study)
        return write_results(self.sweep_dir, self.study, self.metric, self.url, retrain)

    def _check_arguments(self, arguments: list[str]) -> list[str]:
        parsed = OverridesParser.create().parse_overrides(list(arguments))
        swept = [o.input_line for o in parsed if o.is_sweep_override()]
        if swept:
            raise CifarlabError(
                f"{' '.join(swept)}: a search takes its parameters from hydra.sweeper.params "
                f"(conf/hparams_search/), not from comma lists or ranges ({SPACE_EXAMPLE}); "
                "for several seeds per parameter set, use hydra.sweeper.n_seeds."
            )
        return list(arguments)

    def _ask(self) -> Trial | None:
        """A new trial with its parameters, or None when other workers filled ``n_trials`` between
        our count and the ask: that trial is failed at once (marked not run) and never runs."""
        with warnings.catch_warnings():
            # RDB heartbeat: Optuna warns that it beats only in Study.optimize; we beat ourselves
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask()
        trials = self.study.get_trials(deepcopy=False)
        if sum(t.number < trial.number and counts(t) for t in trials) >= self.n_trials:
            trial.set_user_attr(NOT_RUN, f"the study already had n_trials={self.n_trials}")
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return None
        for name, space in self.space.items():
            suggest(trial, name, space)
        return trial

    def job_overrides(self, trial: Trial, seed_index: int) -> list[str]:
        """The overrides of one job of a trial: the command line, the trial's parameters, which
        trial it is (``search.trial``, for the pruning callback) and its directory."""
        params = [override(k, v) for k, v in trial.params.items()]
        subdir = f"trial_{trial.number}"
        seed = []
        if len(self.seeds) > 1:
            subdir += f"_seed_{self.seeds[seed_index]}"
            seed = [f"seed={self.seeds[seed_index]}"]
        return [
            *self.arguments,
            *params,
            *seed,
            f"search.trial={trial.number}",
            f"search.prune={str(seed_index == 0).lower()}",
            f"hydra.sweep.subdir={subdir}",
        ]

    def _launch(self, jobs: list[tuple[RunningTrial, list[str]]]) -> None:
        """Runs one batch of jobs through Hydra's launcher; each outcome goes to its trial, read
        from the job's directory, where the jobs of every launcher leave their files."""
        self.launcher.launch([overrides for _, overrides in jobs], initial_job_idx=self.job_idx)
        self.job_idx += len(jobs)
        for running, overrides in jobs:
            subdir = next(o for o in overrides if o.startswith("hydra.sweep.subdir="))
            job_dir = self.sweep_dir / subdir.split("=", 1)[1]
            running.outcomes.append(job_outcome(job_dir, self.metric))

    def _run_trials(self, trials: list[Trial]) -> None:
        """The first seed of every trial, then the other seeds of those that completed it (a
        pruned or failed first seed ends its trial); then each trial is told."""
        running = [RunningTrial(t, []) for t in trials]
        try:
            self._launch([(r, self.job_overrides(r.trial, 0)) for r in running])
            more = [r for r in running if r.outcomes[0].status == "completed"]
            for index in range(1, len(self.seeds)):
                if more:
                    self._launch([(r, self.job_overrides(r.trial, index)) for r in more])
        except BaseException:
            # Ctrl-C, SIGTERM, a launcher error: these trials have no result and leave their place
            for r in running:
                r.trial.set_user_attr(ERROR, "stopped before its jobs ended")
                self.study.tell(r.trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        for r in running:
            self._tell(r)

    def _tell(self, running: RunningTrial) -> None:
        outcomes, trial = running.outcomes, running.trial
        first = outcomes[0]
        broken = next((o for o in outcomes if o.status in ("failed", "diverged")), None)
        if broken is not None:
            result = broken.status
        elif first.status == "pruned":
            result = "pruned"
        else:
            result = "completed"
        values = [o.value for o in outcomes if o.value is not None]
        tests = [o.test_acc for o in outcomes if o.test_acc is not None]
        attrs = {
            RESULT: result,
            METRIC: sum(values) / len(values) if values else None,
            TEST_ACC: sum(tests) / len(tests) if len(tests) == len(outcomes) else None,
            EPOCHS: first.epochs,
            WALL_TIME: round(sum(o.wall_time_s or 0.0 for o in outcomes), 2),
            SEEDS: self.seeds[: len(outcomes)] if len(self.seeds) > 1 else [],
            ERROR: broken.error if broken else "",
            JOB_DIRS: [str(o.job_dir) for o in outcomes],
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if result == "completed":
            self.study.tell(trial, attrs[METRIC], skip_if_finished=True)
        else:
            state = TrialState.PRUNED if result == "pruned" else TrialState.FAIL
            self.study.tell(trial, state=state, skip_if_finished=True)
        log.info("Trial %d %s: %s=%s", trial.number, result, self.metric, attrs[METRIC])

    def retrain_line(self, study: optuna.Study) -> str:
        """The train.py command that trains the best trial's parameter set on its own."""
        best = best_trial(study)
        if best is None:
            return ""
        keep = [a for a in self.arguments if not a.startswith(("hparams_search=", "search."))]
        params = [override(k, v) for k, v in best.params.items()]
        seeds = best.user_attrs.get(SEEDS) or []
        seed = [f"seed={seeds[0]}"] if seeds else []
        return shlex.join(["uv", "run", "train.py", *keep, *params, *seed])


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
    return str(value).replace("|", "\\|").replace("\n", " ")


def write_results(sweep_dir: Path, study: optuna.Study, metric: str, url: str, retrain: str) -> str:
    """Writes trials.csv and search.md (every trial of the study, from any worker) into the sweep
    directory and returns the markdown."""
    rows = trial_rows(study, metric)
    columns = list(rows[0]) if rows else ["number", "status", metric]
    if not any(row["seeds"] for row in rows):
        columns = [c for c in columns if c != "seeds"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(sweep_dir / "trials.csv", lambda tmp: tmp.write_text(buffer.getvalue()))
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
    lines += [
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
        *("| " + " | ".join(_cell(c, row[c], metric) for c in columns) + " |" for row in rows),
    ]
    text = "\n".join(lines) + "\n"
    write_atomic(sweep_dir / "search.md", lambda tmp: tmp.write_text(text))
    return text
