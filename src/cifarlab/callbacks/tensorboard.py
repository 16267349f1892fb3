"""The run's TensorBoard, which the figure and HParams callbacks draw into."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger


def run_tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    """The run's TensorBoardLogger on global rank 0, the one process that writes; None on the
    other ranks and in a run without one (the callbacks then draw nothing)."""
    if not trainer.is_global_zero:
        return None
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
