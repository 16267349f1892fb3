"""Early stopping (``callbacks.early_stopping.enabled=true``) and why a fit ended, in words."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason


def early_stopping(
    enabled: bool = False,
    monitor: str = "val/acc",
    mode: str = "max",
    patience: int = 5,
    min_delta: float = 0.0,
) -> EarlyStopping | None:
    """Lightning's EarlyStopping when ``callbacks.early_stopping.enabled=true``, else nothing.

    It is checked after every validation: when ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` validations in a row, training stops (and the best checkpoint
    is tested as usual). ``stop_reason`` puts why a run stopped into metrics.json.
    """
    if not enabled:
        return None
    return EarlyStopping(monitor=monitor, mode=mode, patience=patience, min_delta=min_delta)


def stop_reason(trainer: L.Trainer) -> str:
    """Why fit ended, in words: early stopping (and on what), or the epoch/step/time limit."""
    stopper = trainer.early_stopping_callback
    if stopper is not None and stopper.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
        epoch = stopper.stopped_epoch + 1
        if stopper.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED:
            return (
                f"early stopping after epoch {epoch}: {stopper.monitor} did not improve by more "
                f"than {stopper.min_delta:g} for {stopper.patience} epoch(s) "
                f"(best {float(stopper.best_score):.4f})"
            )
        return f"early stopping after epoch {epoch}: {stopper.stopping_reason_message}"
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return f"max_epochs={trainer.max_epochs} reached"
    return "a trainer limit was reached (max_steps or max_time)"
