"""An exponential moving average of the weights, on Lightning's ``WeightAveraging`` callback.

Lightning's callback swaps the average in for validation, saves it as the checkpoint's
``state_dict`` (so the best checkpoint, the test and eval.py all use it) and copies it into the
model when training ends. This subclass adds the two things airbench's schedule needs: a decay that
ramps up over training (``decay * (step / total) ** ramp_power``, so the average forgets the early
weights), and ``lookahead``, which copies the average back into the trained weights at each update.

It also makes the update itself: torch's ``AveragedModel.update_parameters``, which Lightning's
callback calls, compares its update count ``n_averaged``, a device tensor, with 0 twice per update,
and each comparison read back makes the step wait for the device. Here whether the average has
started is known on the host, and an update is a few ``torch._foreach`` ops (as torch's own
``get_ema_multi_avg_fn``) that read nothing.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from cifarlab.internals import averaged_module, averaged_updates

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
        super().__init__(use_buffers=True)
        self.decay, self.every_n_steps = decay, every_n_steps
        self.ramp_power, self.lookahead = ramp_power, lookahead
        self.total_steps = 1
        self._step_decay = decay
        # the optimizer step of the latest update (0: none yet), as Lightning's callback saves it
        self._updated_at = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":  # a fresh average (a resumed fit loads its state after this)
            self._updated_at = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.total_steps = max(int(trainer.estimated_stepping_batches), 1)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None or (step_idx + 1) % self.every_n_steps != 0:
            return False
        progress = min((step_idx + 1) / self.total_steps, 1.0)
        self._step_decay = self.decay * progress**self.ramp_power
        return True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        """Updates the average after each optimizer step ``should_update`` picks (once per step
        when gradients accumulate over batches), as Lightning's callback does."""
        step = trainer.global_step
        if step <= self._updated_at or not self.should_update(step_idx=step - 1):
            return
        average = averaged_module(self)
        pairs = list(
            zip(
                [*average.parameters(), *average.buffers()],
                [*pl_module.parameters(), *pl_module.buffers()],
                strict=True,
            )
        )
        averaged, current = [mine for mine, _ in pairs], [now for _, now in pairs]
        with torch.no_grad():
            if self._updated_at == 0:  # the first update starts the average at the weights
                torch._foreach_copy_(averaged, current)
            else:
                floats = [(mine, now) for mine, now in pairs if mine.is_floating_point()]
                torch._foreach_lerp_(
                    [mine for mine, _ in floats], [now for _, now in floats], 1 - self._step_decay
                )
                for mine, now in pairs:  # e.g. BatchNorm's num_batches_tracked: a count
                    if not mine.is_floating_point():
                        mine.copy_(now)
            averaged_updates(self).add_(1)
            if self.lookahead:
                torch._foreach_copy_(current, averaged)
        self._updated_at = step

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "latest_update_step": self._updated_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._updated_at = state_dict["latest_update_step"]

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning's callback would put the raw weights back into the model whenever a checkpoint
        # is loaded, the test of the best checkpoint included; only resuming a fit needs them.
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
