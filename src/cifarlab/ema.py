"""An exponential moving average of the weights, on Lightning's ``WeightAveraging`` callback.

Lightning's callback swaps the average in for validation, saves it as the checkpoint's
``state_dict`` (so the best checkpoint, the test and eval.py all use it) and copies it into the
model when training ends. This subclass adds the two things airbench's schedule needs: a decay that
ramps up over training (``decay * (step / total) ** ramp_power``, so the average forgets the early
weights), and ``lookahead``, which copies the average back into the trained weights at each update.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from cifarlab.errors import CifarlabError
from cifarlab.internals import averaged_module

# ClassifierModule.configure_model only compiles the net in place (model.compile); the averaged
# copy shares the same layers, so the callback's warning about sharded layers does not apply.
warnings.filterwarnings("ignore", message="You're using the WeightAveraging callback with a model")


class WeightEMA(WeightAveraging):
    """EMA of all weights and BatchNorm statistics, updated every ``every_n_steps`` steps."""

    def __init__(
        self,
        decay: float = 0.999,
        every_n_steps: int = 1,
        ramp_power: float = 0.0,
        lookahead: bool = False,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise CifarlabError(f"ema.decay={decay!r} must be in (0, 1), e.g. 0.999; 0 = off.")
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise CifarlabError(f"ema.every_n_steps={every_n_steps!r} must be a whole number >= 1.")
        super().__init__(use_buffers=True, avg_fn=self._average)
        self.decay, self.every_n_steps = decay, every_n_steps
        self.ramp_power, self.lookahead = ramp_power, lookahead
        self.total_steps = 1
        self._step_decay = decay
        self._updated = False

    def _average(
        self, average: torch.Tensor, current: torch.Tensor, _: torch.Tensor
    ) -> torch.Tensor:
        if not average.is_floating_point():  # e.g. BatchNorm's num_batches_tracked
            return current
        return average.lerp(current, 1.0 - self._step_decay)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.total_steps = max(int(trainer.estimated_stepping_batches), 1)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        self._updated = step_idx is not None and (step_idx + 1) % self.every_n_steps == 0
        if self._updated:
            progress = min((step_idx + 1) / self.total_steps, 1.0)
            self._step_decay = self.decay * progress**self.ramp_power
        return self._updated

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)
        if self.lookahead and self._updated:
            self._updated = False
            average = averaged_module(self)
            with torch.no_grad():
                for mine, averaged in zip(
                    [*pl_module.parameters(), *pl_module.buffers()],
                    [*average.parameters(), *average.buffers()],
                    strict=True,
                ):
                    mine.copy_(averaged)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning's callback would put the raw weights back into the model whenever a checkpoint
        # is loaded, the test of the best checkpoint included; only resuming a fit needs them.
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
