"""Callbacks the tests add to a run from its command line, ``+callbacks.NAME._target_=
tests.injected_callbacks.CLASS`` plus its arguments as ``+callbacks.NAME.ARG=VALUE``: each puts the
run where a test needs it (held between epochs, out of disk, killed) or records what it saw.

Hydra imports them by this module's name, also in the ``train.py`` processes the tests start.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig

from .os_helpers import limit_file_size

# what HoldBeforeSecondEpoch prints, on a line of its own, once it holds
READY = "cifarlab-test: holding before epoch 1"


class HoldBeforeSecondEpoch(L.Callback):
    """Once the first epoch and its last.ckpt are done, each process prints READY and waits until
    the run has received SIGTERM (or Ctrl-C, which interrupts the wait), so the test signals a run
    that is certainly between its first and second epoch.

    It holds once: the resumed run, which builds this callback from the checkpoint's config once
    the command line names its class again, finds its marker (``marker``.rank<N>) and goes on.
    """

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        marker = self.marker.with_name(f"{self.marker.name}.rank{trainer.global_rank}")
        if trainer.current_epoch != 1 or marker.exists():
            return
        marker.touch()
        print(READY, flush=True)
        while not trainer.received_sigterm:  # set by Lightning's SIGTERM handler
            time.sleep(0.01)


class DiskFillsAfterFirstEpoch(L.Callback):
    """Inside ``os_helpers.file_size_limit``: from the second epoch on no file may grow past half
    the size of the first epoch's last.ckpt, as on a disk that has filled up."""

    def __init__(self, last_ckpt: str) -> None:
        self.last_ckpt = Path(last_ckpt)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            limit_file_size(self.last_ckpt.stat().st_size // 2)


class SplitProbe(L.Callback):
    """Writes, per DDP rank, a hash of the validation split and how many images the rank saw."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.seen = 0

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self.seen += len(args[1][1])

    def on_validation_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        images = trainer.datamodule.splits["val"].images
        record = {
            "world_size": trainer.world_size,
            "val_sha1": hashlib.sha1(images.numpy().tobytes()).hexdigest(),
            "seen": self.seen,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        self.seen = 0


def kill_this_process_in_job(job: int) -> None:
    """A callbacks entry (``+callbacks.kill.job=N``) that SIGKILLs the sweep's process when job N
    builds its callbacks, as the kernel's OOM killer would. Other jobs get no callback."""
    if HydraConfig.get().job.num == job:
        os.kill(os.getpid(), signal.SIGKILL)


def target_of(injected: type | Any) -> str:
    """The ``_target_`` that names ``injected`` (a class or function of this module)."""
    return f"{injected.__module__}.{injected.__qualname__}"
