"""The learning-rate schedule of the ``scheduler`` config group, stepped once per optimizer step.

Every schedule is one ``LambdaLR`` with a factor per parameter group: a net's early parameters
(fastnet's whitening bias, ``early_params()``) have their own factor, which falls linearly to 0
over their epochs whatever the schedule of the others.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cifarlab.training.optimizers import EARLY_EPOCHS, build_optimizer

if TYPE_CHECKING:
    import lightning as L

# torch's OneCycleLR defaults, which scheduler=onecycle keeps: start at peak/25, end at start/1e4
ONECYCLE_START, ONECYCLE_END = 1 / 25, 1 / 25 / 1e4


def lr_factor(name: str, cfg: dict[str, Any], step: int, total: int) -> float:
    """The learning rate at ``step`` of ``total`` as a fraction of optimizer.lr.

    ``none``: 1 throughout.
    ``cosine``: linear warm-up from 0 over ``warmup_pct`` of the steps, then cosine decay to 0.
    ``triangular`` (airbench): linear from ``start`` to 1 at ``peak_pct``, then linear to ``end``.
    ``onecycle``: torch's ``OneCycleLR`` with linear annealing, step for step: from 1/25 up to 1
    at step ``pct_start * total - 1``, then down to 1/25/1e4 at the last step, ``total - 1``.
    """
    if name == "none":
        return 1.0
    if name == "onecycle":
        peak, step = cfg.get("pct_start", 0.25) * total - 1, min(step, total - 1)
        if step <= peak and peak > 0:
            return ONECYCLE_START + (1.0 - ONECYCLE_START) * step / peak
        fall = total - 1 - peak  # steps from the peak to the last; none: the run is the peak
        return 1.0 + (ONECYCLE_END - 1.0) * (step - peak) / fall if fall > 0 else 1.0
    t = min(step, total) / max(total, 1)
    if name == "cosine":
        warmup = cfg.get("warmup_pct", 0.0)
        if t < warmup:
            return (step + 1) / (warmup * total)
        return 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (1.0 - warmup)))
    peak, start, end = cfg.get("peak_pct", 0.23), cfg.get("start", 0.2), cfg.get("end", 0.07)
    if t < peak:
        return start + (1.0 - start) * t / peak
    return 1.0 + (end - 1.0) * (t - peak) / (1.0 - peak)


def early_lr_factor(step: int, early_steps: int) -> float:
    """The lr factor of a net's early parameters: from 1 at step 0 linearly to 0 at
    ``early_steps``, then 0 (airbench94_muon's whitening-bias schedule). With lr 0, SGD, AdamW
    and Muon's SGD groups leave a parameter as it is, weight decay included (decay is scaled by
    the lr in all three)."""
    return max(0.0, 1.0 - step / early_steps) if early_steps > 0 else 0.0


def optimizer_steps_per_epoch(trainer: L.Trainer) -> int:
    """The optimizer steps of one training epoch: Lightning steps after every
    ``accumulate_grad_batches`` batches and after an epoch's last batch. Loads the training data
    when it is not loaded yet, as ``Trainer.estimated_stepping_batches`` does."""
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()
    return math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)


def build_optimization(
    net: nn.Module,
    optimizer_cfg: dict[str, Any],
    scheduler_cfg: dict[str, Any] | None,
    total_steps: Callable[[], int],
    steps_per_epoch: Callable[[], int],
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns: the optimizer, with its per-step
    schedule when there is one (``scheduler`` other than none, or a net with early parameters).

    The schedule is one ``LambdaLR`` with a factor per parameter group, so that a checkpoint's
    step count resumes every group where it was. ``total_steps`` is asked only by a schedule
    that needs it, ``steps_per_epoch`` only for a net with early parameters.
    """
    optimizer = build_optimizer(net, optimizer_cfg)
    cfg = scheduler_cfg or {"name": "none"}
    name = cfg.get("name", "none")
    if name == "none" and not any(EARLY_EPOCHS in group for group in optimizer.param_groups):
        return optimizer
    total = total_steps() if name != "none" else 0
    factors: list[Callable[[int], float]] = []
    for group in optimizer.param_groups:
        if EARLY_EPOCHS in group:
            early_steps = group[EARLY_EPOCHS] * steps_per_epoch()
            factors.append(functools.partial(early_lr_factor, early_steps=early_steps))
        else:
            factors.append(functools.partial(lr_factor, name, cfg, total=total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
