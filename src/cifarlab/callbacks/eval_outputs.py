"""An evaluation loop's logits and labels, collected on the device and gathered across DDP
processes when the loop ends (the error analysis of a test, the temperature fit on validation)."""

from __future__ import annotations

from typing import Any

import lightning as L
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


class CollectsOutputs(L.Callback):
    """A callback that collects one evaluation loop's outputs and acts on them at the loop's end.

    A subclass names the loop (``class Fit(CollectsOutputs, loop="validation")``, or ``"test"``),
    whose epoch-start, batch-end and epoch-end hooks become ``start``, ``add`` and ``end``, and
    implements ``collected``: ``add`` keeps each batch's logits (what the eval step returned) with
    its images and labels; ``end`` gathers what every process collected (on every rank: the
    gathering is a collective) and hands it to ``collected``.
    """

    def __init_subclass__(cls, loop: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if loop is not None:
            setattr(cls, f"on_{loop}_epoch_start", cls.start)
            setattr(cls, f"on_{loop}_batch_end", cls.add)
            setattr(cls, f"on_{loop}_epoch_end", cls.end)

    def __init__(self, num_hardest: int = 0) -> None:
        self.num_hardest = num_hardest
        self._outputs: EvalOutputs | None = None

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._outputs = EvalOutputs(self.num_hardest).to(pl_module.device)

    def add(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        if isinstance(outputs, torch.Tensor) and self._outputs is not None:
            self._outputs.update(batch[0], outputs, batch[1])

    def end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._outputs is None or not self._outputs.logits:
            return
        collected = self._outputs.compute()
        self._outputs = None
        self.collected(trainer, pl_module, collected)

    def collected(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: dict[str, torch.Tensor]
    ) -> None:
        """What the loop's outputs are for, called on every rank."""
        raise NotImplementedError
