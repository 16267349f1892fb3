"""Per-epoch numbers and curves in the run directory itself, for a look without TensorBoard.

``EpochCurves`` writes ``history.csv`` (one row per epoch: train/val loss and accuracy, the lr of
the epoch's last step) and
``curves.png`` (loss and accuracy against the epoch) after every epoch, so an interrupted or
diverged run keeps the curves of the epochs it finished, and a resumed run carries on the file.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L

from cifarlab.review.figures import curves_figure, save_png
from cifarlab.review.tables import write_csv

COLUMNS = ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "lr")
HISTORY = "history.csv"
CURVES = "curves.png"


def read_history(path: Path) -> dict[int, dict[str, float]]:
    """Rows of a history.csv by epoch; empty cells become NaN (an epoch without validation)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        int(row["epoch"]): {k: float(row[k]) if row.get(k) else math.nan for k in COLUMNS[1:]}
        for row in rows
    }


class EpochCurves(L.Callback):
    """Writes history.csv and curves.png into ``dirpath`` after every training epoch (rank 0).

    The epoch's numbers are read at the start of the next epoch and when training ends: only then
    has the LightningModule logged its training loss (its ``on_train_epoch_end`` runs after the
    callbacks').
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self._history: dict[int, dict[str, float]] | None = None
        self._last_lr = math.nan

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int
    ) -> None:
        """The lr of the epoch's last step (read after it, a schedule has moved past its end)."""
        if trainer.optimizers:
            self._last_lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch  # epochs completed so far
        metrics = trainer.callback_metrics
        # nothing logged yet: the first epoch, or the first one after resuming from a checkpoint
        if not trainer.is_global_zero or epoch < 1 or "train/loss" not in metrics:
            return
        if self._history is None:  # a resumed run continues the file of its directory
            self._history = {
                e: row for e, row in read_history(self.dirpath / HISTORY).items() if e < epoch
            }

        def value(key: str) -> float:
            found = metrics.get(key)
            return float(found) if found is not None else math.nan

        self._history[epoch] = {**{k: value(k) for k in COLUMNS[1:-1]}, "lr": self._last_lr}
        self._write(pl_module)

    def _write(self, pl_module: L.LightningModule) -> None:
        assert self._history is not None
        rows = [
            [epoch, *("" if math.isnan(row[k]) else f"{row[k]:.6g}" for k in COLUMNS[1:])]
            for epoch, row in sorted(self._history.items())
        ]
        write_csv(self.dirpath / HISTORY, COLUMNS, rows)
        name = getattr(pl_module, "hparams", {}).get("model", {}).get("name", "model")
        save_png(curves_figure(self._history, f"{name}: per-epoch curves"), self.dirpath / CURVES)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._history is None or trainer.current_epoch not in self._history:
            self._record(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, pl_module)
