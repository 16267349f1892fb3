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

import shlex
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState

from cifarlab.errors import CifarlabError
from cifarlab.files import write_atomic
from cifarlab.sweeps.heartbeat import Heartbeat
from cifarlab.sweeps.search_space import SPACE_EXAMPLE, override, search_space, suggest
from cifarlab.sweeps.storage import open_storage, storage_url, trial_id
from cifarlab.sweeps.trials import (
    EPOCHS,
    ERROR,
    JOB_DIRS,
    METRIC,
    NOT_RUN,
    RESULT,
    SEEDS,
    TEST_ACC,
    WALL_TIME,
    JobOutcome,
    best_trial,
    counts,
    job_outcome,
    write_results,
)
from cifarlab.utils import log


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
