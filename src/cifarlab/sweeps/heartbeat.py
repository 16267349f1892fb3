"""Keeping a worker's running trials marked alive, and failing those whose worker stopped."""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Iterator, Sequence

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState

from cifarlab.sweeps.storage import trial_id
from cifarlab.sweeps.trials import counts
from cifarlab.utils import log

HEARTBEAT = "heartbeat"  # journal storages: when this trial's worker last said it was alive


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
