"""An evaluation loop's logits and labels, collected on the device and gathered across DDP
processes when the loop ends (the error analysis of a test, the temperature fit on validation)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class EvalOutputs(Metric):
    """Every test logit and label, and per batch the ``num_hardest`` highest-loss images (the
    overall hardest are among them), kept on the device until the test ends."""

    full_state_update = False

    def __init__(self, num_hardest: int = 16) -> None:
        super().__init__()
        self.num_hardest = num_hardest
        for name in ("logits", "targets", "hard_images", "hard_logits", "hard_targets"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits = logits.detach().float()
        self.logits.append(logits)
        self.targets.append(targets)
        losses = F.cross_entropy(logits, targets, reduction="none")
        hard = losses.topk(min(self.num_hardest, len(losses))).indices
        self.hard_images.append(images[hard].detach().clone())
        self.hard_logits.append(logits[hard])
        self.hard_targets.append(targets[hard])

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            name: dim_zero_cat(getattr(self, name))
            for name in ("logits", "targets", "hard_images", "hard_logits", "hard_targets")
        }


class OutputCollector:
    """``EvalOutputs`` from a loop's first batch to its end: ``start`` at the loop's start,
    ``add`` each batch's logits (what the eval step returned) with its images and labels, and
    ``take`` what every process collected at its end (on every rank: the gathering is a
    collective)."""

    def __init__(self, num_hardest: int) -> None:
        self.num_hardest = num_hardest
        self._outputs: EvalOutputs | None = None

    def start(self, device: torch.device) -> None:
        self._outputs = EvalOutputs(self.num_hardest).to(device)

    def add(self, outputs: Any, batch: Any) -> None:
        if isinstance(outputs, torch.Tensor) and self._outputs is not None:
            self._outputs.update(batch[0], outputs, batch[1])

    def take(self) -> dict[str, torch.Tensor] | None:
        """Everything collected since ``start``, gathered; None when nothing was."""
        if self._outputs is None or not self._outputs.logits:
            return None
        collected = self._outputs.compute()
        self._outputs = None
        return collected
