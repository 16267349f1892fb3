"""A SIGTERM to a job whose ddp_spawn/ddp_fork workers train stops them as it stops one process."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cifarlab.internals import in_process_workers, signal_workers
from cifarlab.utils import log

# how long the job's process waits for ddp_spawn/ddp_fork workers to stop after a SIGTERM (they
# stop at their next batch; a cluster's grace period before SIGKILL is usually 30 s or more)
WORKER_STOP_TIMEOUT_S = 120


@contextlib.contextmanager
def sigterm_reaches_workers(trainer: L.Trainer) -> Iterator[None]:
    """Around ``trainer.fit``: a SIGTERM to this process stops ddp_spawn/ddp_fork workers the way
    Lightning stops a single process, and ends this one as a single process ends.

    With those strategies this process only waits for its workers (in ``mp.start_processes``).
    Lightning installs its SIGTERM handler in the workers only, so a SIGTERM here (a cluster's time
    limit) would kill this process at once, with nothing recorded, and torch's SIGINT-on-parent-
    death would cut the workers off mid-epoch. Here the signal is passed on to the workers, whose
    Lightning handler stops them at their next batch, and raised here as Lightning's loops raise
    it (``SIGTERMException``), so fit ends as interrupted; on the way out this process waits for
    the workers to end. The workers inherit the handler (fork) and Lightning calls it after its
    own; it does nothing outside this process. Other launches are left to Lightning.
    """
    in_process = in_process_workers(trainer.strategy) is not None
    if not in_process or threading.current_thread() is not threading.main_thread():
        yield
        return
    job_pid, received = os.getpid(), []

    def pass_on(signum: int, frame: Any) -> None:
        if os.getpid() != job_pid or received:
            return  # a worker (Lightning's own handler acts there), or the signal came again
        received.append(signum)
        signal_workers(trainer.strategy, signal.Signals(signum))
        raise SIGTERMException

    previous = signal.signal(signal.SIGTERM, pass_on)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if received:
            _wait_for(in_process_workers(trainer.strategy) or [])


def _wait_for(workers: list[mp.process.BaseProcess]) -> None:
    deadline = WORKER_STOP_TIMEOUT_S
    for worker in workers:
        start = time.monotonic()
        worker.join(max(deadline, 0))
        deadline -= time.monotonic() - start
    alive = [w.pid for w in workers if w.is_alive()]
    if alive:
        log.warning(
            "Worker process(es) %s did not stop within %d s of the SIGTERM.",
            alive,
            WORKER_STOP_TIMEOUT_S,
        )
