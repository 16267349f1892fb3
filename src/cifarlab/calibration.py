"""Temperature scaling (Guo et al. 2017): one number T that divides the logits so the softmax
probabilities match how often the model is right. T is fitted on the validation split, never on
the test images it is judged on, and stored beside the checkpoint (``<ckpt>.temperature.json``)
so the checkpoint itself is never rewritten; predict.py reads it from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from cifarlab.analysis import Calibration, EvalOutputs
from cifarlab.files import write_json


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T > 0 that minimizes the NLL of ``logits / T``, by LBFGS on log T (so T stays
    positive without a constraint); the loss is convex in 1/T, so the minimum is the global one.

    Lightning's validate/test hooks run under ``torch.inference_mode``, whose tensors autograd
    refuses: the fit runs with gradients on, on copies made outside it."""
    with torch.inference_mode(False), torch.enable_grad():
        logits, targets = logits.detach().float().cpu().clone(), targets.cpu().clone()
        log_t = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), targets)
            loss.backward()
            return loss

        optimizer.step(closure)
        return float(log_t.detach().exp())


class TemperatureFit(L.Callback):
    """Collects the validation logits of ``trainer.validate`` (gathered across DDP processes),
    fits the temperature and, on rank 0, writes it with its validation scores to ``path``."""

    def __init__(self, path: Path, ckpt_path: str) -> None:
        self.path = path
        self.ckpt_path = ckpt_path
        self._outputs: EvalOutputs | None = None
        self.record: dict[str, Any] | None = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._outputs = EvalOutputs(num_hardest=0).to(pl_module.device)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        if isinstance(outputs, torch.Tensor) and self._outputs is not None:
            self._outputs.update(batch[0], outputs, batch[1])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._outputs is None or not self._outputs.logits:
            return
        collected = self._outputs.compute()
        self._outputs = None
        logits, targets = collected["logits"].cpu(), collected["targets"].cpu()
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
