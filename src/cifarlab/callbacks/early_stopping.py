"""Early stopping (``callbacks.early_stopping.enabled=true``) and why a fit ended, in words."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from cifarlab.errors import CifarlabError


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
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise CifarlabError(
            f"callbacks.early_stopping.patience={patience!r} must be a whole number >= 1 "
            "(validations without improvement before stopping)."
        )
    if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or min_delta < 0:
        raise CifarlabError(
            f"callbacks.early_stopping.min_delta={min_delta!r} must be a number >= 0 (the "
            "smallest change that counts as an improvement, e.g. 0.001)."
        )
    if mode not in ("max", "min"):
        raise CifarlabError(
            f"callbacks.early_stopping.mode={mode!r} must be max (accuracy) or min (loss)."
        )
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
