"""Where a search's study lives (``hydra.sweeper.storage``): an RDB or a journal file, opened by
every worker that runs the same command."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from cifarlab.errors import CifarlabError


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
