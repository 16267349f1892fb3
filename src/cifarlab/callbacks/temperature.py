"""Fitting a checkpoint's temperature on the validation split (``eval.py calibrate=true``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from cifarlab.callbacks.eval_outputs import CollectsOutputs
from cifarlab.files import write_json
from cifarlab.inference.calibration import fit_temperature
from cifarlab.review.analysis import Calibration


class TemperatureFit(CollectsOutputs, loop="validation"):
    """Collects the validation logits of ``trainer.validate`` (gathered across DDP processes),
    fits the temperature and, on rank 0, writes it with its validation scores to ``path``."""

    def __init__(self, path: Path, ckpt_path: str) -> None:
        super().__init__()
        self.path = path
        self.ckpt_path = ckpt_path
        self.record: dict[str, Any] | None = None

    def collected(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: dict[str, torch.Tensor]
    ) -> None:
        logits, targets = outputs["logits"].cpu(), outputs["targets"].cpu()
        temperature = fit_temperature(logits, targets)
        self.record = {
            "temperature": temperature,
            "fitted_on": f"validation split, {len(targets)} images",
            "checkpoint": str(self.ckpt_path),
            "val_before": vars(Calibration.of(logits, targets)),
            "val_after": vars(Calibration.of(logits / temperature, targets)),
        }
        if trainer.is_global_zero:
            write_json(self.path, self.record)
