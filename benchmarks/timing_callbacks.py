"""Callbacks the speed benchmark adds to real runs through Hydra (``+callbacks.NAME._target_=...``).

They write what they measure to a file, so the benchmark can read it from another process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L


class FirstStepStamp(L.Callback):
    """Writes wall-clock times (``time.time()``) as JSON: when the run's callbacks are built
    (imports and config composition are done by then) and when the first training step starts."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.built = time.time()

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if not self.path.exists():
            self.path.write_text(json.dumps({"built": self.built, "first_step": time.time()}))


class EpochTimer(L.Callback):
    """Writes the training time of each epoch (stopped before validation starts) as a JSON list."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.times: list[float] = []
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def _stop(self) -> None:
        if self._start is not None:
            self.times.append(time.perf_counter() - self._start)
            self._start = None
            self.path.write_text(json.dumps(self.times))

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._stop()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._stop()
