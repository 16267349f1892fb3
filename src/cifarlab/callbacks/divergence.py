"""Stopping a run whose training loss is no longer a finite number, on every process together."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

# what DivergenceGuard leaves in trainer.callback_metrics (which also reach a ddp_spawn/fork parent)
DIVERGED_KEYS = ("diverged/epoch", "diverged/batch", "diverged/loss")


def step_loss(outputs: Any) -> torch.Tensor | None:
    """The training loss in what ``training_step`` returned (a tensor, or a dict with ``loss``),
    as given to ``on_train_batch_end``; None when the step returned no loss."""
    loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
    return loss if isinstance(loss, torch.Tensor) else None


class DivergenceGuard(L.Callback):
    """Stops training, on every process together, once a training loss is not a finite number.

    Reading the loss back each step would make every step wait for the device, so a step only
    keeps its loss (the device tensor Lightning hands to ``on_train_batch_end``, no op at all),
    and the losses are checked every ``check_every_n_steps`` batches, at the last batch of the
    epoch and before any validation, the only points where the run can save a checkpoint. There
    the window of losses is stacked, its count of non-finite losses and its sum are summed over
    all processes and read: one read per check. So every rank stops at the same batch and none
    waits in a collective for the others.

    Stopping leaves Lightning's loops as an early stop does (``StopIteration``, which Lightning's
    fit and epoch loops end on), before that epoch's validation and before the checkpoint
    callbacks' ``on_train_epoch_end`` (this callback's hook runs first: Lightning calls
    checkpoint callbacks last). So no checkpoint of the broken weights is written, ``fit`` returns
    normally under every strategy, and ``diverged/*`` in ``trainer.callback_metrics`` says where.

    The same read brings the training loss to the host: ``mean_loss`` is the mean loss of the steps
    since the check before (over all processes), which the progress bar shows. Showing the loss so
    costs no read of its own, and no step between two checks waits for the device.
    """

    def __init__(self, check_every_n_steps: int = 100) -> None:
        self.every = check_every_n_steps
        self.diverged = False
        self.mean_loss: float | None = None
        # the steps since the last check: their losses (on the device) and batch numbers
        self._losses: list[torch.Tensor] = []
        self._batches: list[int] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.diverged = False
        self.mean_loss = None
        self._losses, self._batches = [], []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        loss = step_loss(outputs)
        if loss is not None:
            self._losses.append(loss.detach())
            self._batches.append(idx)
        if self._due(trainer, idx) and self._any_diverged(trainer):
            raise StopIteration

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.diverged:  # ends the fit loop before the checkpoint callbacks' epoch-end saves
            raise StopIteration

    def _due(self, trainer: L.Trainer, batch_idx: int) -> bool:
        done = batch_idx + 1
        val_every = trainer.val_check_batch
        before_validation = isinstance(val_every, int) and val_every > 0 and done % val_every == 0
        return done % self.every == 0 or done >= trainer.num_training_batches or before_validation

    def _any_diverged(self, trainer: L.Trainer) -> bool:
        if not self._losses:
            return False
        # float32: the loss's own type under mixed precision may be too coarse for a sum, and MPS
        # has no float64
        losses = torch.stack(self._losses).float()
        batches, steps = self._batches, len(self._batches)
        self._losses, self._batches = [], []
        finite = torch.isfinite(losses)
        totals = torch.stack(((~finite).sum().float(), losses.sum()))
        totals = trainer.strategy.reduce(totals, reduce_op="sum")
        # the one read of the device: every N steps, not every step
        non_finite, loss_sum = totals.tolist()
        self.mean_loss = loss_sum / (steps * trainer.world_size)
        if non_finite == 0:
            return False
        # this process's first non-finite loss as (batch, value), (-1, -1) if none
        first = [-1.0, -1.0]
        for batch, value, ok in zip(batches, losses.tolist(), finite.tolist(), strict=True):
            if not ok:
                first = [float(batch), value]
                break
        # the earliest non-finite loss of any process, for the message rank 0 reports
        with warnings.catch_warnings():  # Lightning's all_gather calls a deprecated torch one
            warnings.filterwarnings("ignore", message=".*all_gather is deprecated")
            firsts = trainer.strategy.all_gather(torch.tensor(first, device=losses.device))
        rows = firsts.reshape(-1, 2).cpu().tolist()
        batch, value = min((row for row in rows if row[0] >= 0), key=lambda r: r[0])
        trainer.callback_metrics.update(
            dict(
                zip(
                    DIVERGED_KEYS,
                    torch.tensor([trainer.current_epoch, batch, value], dtype=torch.float64),
                    strict=True,
                )
            )
        )
        self.diverged = True
        return True


def divergence_message(metrics: Mapping[str, Any]) -> str | None:
    """What DivergenceGuard found, as one paragraph; None when training did not diverge."""
    if DIVERGED_KEYS[0] not in metrics:
        return None
    epoch, batch, value = (float(metrics[key]) for key in DIVERGED_KEYS)
    return (
        f"Training diverged: the loss became {value} at epoch {int(epoch)}, batch {int(batch)}. "
        "Training stopped there, before any checkpoint of the broken weights was written. Try a "
        "lower optimizer.lr, gradient clipping (trainer.gradient_clip_val=1.0) or a scheduler "
        "with warm-up."
    )
