"""Callbacks the speed benchmark adds to real runs through Hydra (``+callbacks.NAME._target_=...``).

They write what they measure to a file, so the benchmark can read it from another process.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import lightning as L
import torch


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


class DeviceProbe(L.Callback):
    """What benchmarks/gpu_check.py measures inside a real run, written as JSON to ``path``.

    - ``epoch_s``: training time of each epoch (the device synchronized at both ends);
    - ``syncs`` / ``steps``: host synchronizations counted with ``torch.cuda.set_sync_debug_mode``
      ("warn") from the first step of epoch ``count_from_epoch`` to the last step of the run's
      last epoch, everything a step does included (callbacks, the divergence check, the data);
      ``sync_sites``: where they came from (file:line of the Python frame);
    - ``data_mb``: device memory added between the start of fit and the first training step
      (the training split on the device and its augmentation views), ``peak_mb``: peak during fit;
    - ``test_s``: time of the test epoch over ``test_images`` images.
    """

    def __init__(self, path: str, count_from_epoch: int = 1) -> None:
        self.path = Path(path)
        self.count_from_epoch = count_from_epoch
        self.record: dict = {"epoch_s": [], "syncs": 0, "steps": 0, "sync_sites": {}}
        self._start: float | None = None
        self._fit_mb = 0.0
        self._catcher: warnings.catch_warnings | None = None
        self._caught: list = []

    @staticmethod
    def _cuda(module: L.LightningModule) -> bool:
        return module.device.type == "cuda"

    def _sync(self, module: L.LightningModule) -> None:
        if self._cuda(module):
            torch.cuda.synchronize(module.device)

    def _write(self) -> None:
        self.path.write_text(json.dumps(self.record, indent=1))

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._cuda(module):
            torch.cuda.reset_peak_memory_stats(module.device)
            self._fit_mb = torch.cuda.memory_allocated(module.device) / 2**20

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._sync(module)
        self._start = time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: object, batch_idx: int
    ) -> None:
        if self._cuda(module) and trainer.global_step == 0 and batch_idx == 0:
            now_mb = torch.cuda.memory_allocated(module.device) / 2**20
            self.record["data_mb"] = now_mb - self._fit_mb
        counting = trainer.current_epoch >= self.count_from_epoch
        if counting and self._cuda(module) and self._catcher is None:
            self._catcher = warnings.catch_warnings(record=True)
            self._caught = self._catcher.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        if counting:
            self.record["steps"] += 1

    def _stop_counting(self) -> None:
        if self._catcher is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)
        self._catcher = None
        syncs = [w for w in self._caught if "synchroniz" in str(w.message)]
        self.record["syncs"] += len(syncs)
        sites = self.record["sync_sites"]
        for w in syncs:
            site = f"{Path(w.filename).name}:{w.lineno}"
            sites[site] = sites.get(site, 0) + 1

    def _stop_epoch(self, module: L.LightningModule) -> None:
        self._stop_counting()
        if self._start is not None:
            self._sync(module)
            self.record["epoch_s"].append(time.perf_counter() - self._start)
            self._start = None
            self._write()

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._start is not None:
            self._stop_epoch(module)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._stop_epoch(module)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._stop_counting()
        if self._cuda(module):
            self.record["peak_mb"] = torch.cuda.max_memory_allocated(module.device) / 2**20
        self._write()

    def on_test_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._sync(module)
        self.record["test_images"] = 0
        self._start = time.perf_counter()

    def on_test_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: tuple, *args: object
    ) -> None:
        self.record["test_images"] += len(batch[1])

    def on_test_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._sync(module)
        self.record["test_s"] = time.perf_counter() - (self._start or time.perf_counter())
        self._start = None
        self._write()


class AirbenchClock(L.Callback):
    """airbench's clock: ``train_s`` from the start of training to its end and ``test_s`` over the
    test epoch (with TTA), the device synchronized at each end; and ``setup_s`` from when the
    callbacks are built to the start of training (data decoding or cache loading, the copy to the
    device, the whitening), which airbench leaves out. ``record`` holds them; with ``path`` they
    are also written there as JSON (for a benchmark that reads them from another process)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = Path(path) if path else None
        self.built = time.perf_counter()
        self.record: dict[str, float] = {}
        self._start = 0.0

    def _now(self, module: L.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = self._now(module)
        self.record["setup_s"] = self._start - self.built

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.record["train_s"] = self._now(module) - self._start

    def on_test_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = self._now(module)

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.record["test_s"] = self._now(module) - self._start
        if self.path is not None:
            self.path.write_text(json.dumps(self.record))
