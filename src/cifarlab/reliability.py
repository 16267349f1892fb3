"""What keeps a run's results safe: atomic checkpoints, exact resume, divergence and interrupts.

A run's full config travels inside every checkpoint it writes (as plain containers), so
``train.py ckpt_path=<run>/checkpoints/last.ckpt`` alone continues that run exactly as it was
configured, in its own directory. Every load of a checkpoint uses ``weights_only=True``: a file
that would run code when unpickled is refused before any of its code runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from cifarlab.errors import CifarlabError
from cifarlab.utils import write_atomic

CONFIG_KEY = "cifarlab_config"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    Lightning's own save stages the file in the system temp folder and *moves* it, which is a
    copy (and can be cut half-way) whenever that folder is on another file system.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        write_atomic(Path(path), lambda tmp: torch.save(checkpoint, tmp))


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the latest completed epoch, improved or not.

    Lightning 2.6 refreshes ``save_last`` only in an epoch that also saves a top-k checkpoint,
    so after epochs without a better ``val/acc`` it would point at an older state, and an
    interrupted run would resume from there.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        """Saves last.ckpt unless this step is already saved (a new best brings its own)."""
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class ConfigInCheckpoint(L.Callback):
    """Stores the run's resolved config in every checkpoint, so resuming needs nothing else."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config


class Diverged(Exception):
    """Raised inside fit when the training loss stops being a finite number."""


class DivergenceGuard(L.Callback):
    """Stops training at the first non-finite loss, before any checkpoint of the broken weights.

    Raising (rather than ``trainer.should_stop``) skips the validation and checkpoint of the
    current epoch, so ``last.ckpt`` and the best checkpoint still hold finite weights.
    """

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else math.nan
        if not math.isfinite(value):
            raise Diverged(
                f"Training diverged: the loss became {value} at epoch {trainer.current_epoch}, "
                f"batch {batch_idx} (step {trainer.global_step}). Try a lower optimizer.lr, "
                "gradient clipping (trainer.gradient_clip_val=1.0) or a scheduler with warm-up."
            )


def load_checkpoint(path: str | None, purpose: str = "eval.py") -> dict[str, Any]:
    """Reads a cifarlab checkpoint with ``weights_only=True``: tensors and plain containers only."""
    if not path:
        raise CifarlabError(
            f"{purpose} needs a checkpoint: add ckpt_path=PATH, e.g. "
            "ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt."
        )
    if not Path(path).is_file():
        raise CifarlabError(f"ckpt_path={path} does not exist (or is not a file).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CifarlabError(
            f"ckpt_path={path} is not a checkpoint cifarlab can load safely ({type(err).__name__}; "
            "only tensors and plain containers are accepted). Pass a .ckpt written by train.py."
        ) from None
    if not isinstance(ckpt, dict) or not {"state_dict", "hyper_parameters"} <= ckpt.keys():
        raise CifarlabError(
            f"ckpt_path={path} is not a cifarlab checkpoint (no state_dict/hyper_parameters). "
            "Pass a .ckpt written by train.py."
        )
    return ckpt


def resume_config(cfg: DictConfig, given: list[str] | None = None) -> DictConfig:
    """The config that continues the run a checkpoint came from, or ``cfg`` for a fresh run.

    ``given`` are the command-line overrides (Hydra's), checked because a resumed run keeps its
    own settings: changing the model, data or schedule halfway would not continue that run.
    """
    path = cfg.get("ckpt_path")
    if not path:
        return cfg
    ckpt = load_checkpoint(path, purpose="Resuming")
    stored = ckpt.get(CONFIG_KEY)
    if not isinstance(stored, dict):
        raise CifarlabError(
            f"ckpt_path={path} holds no run config, so it cannot be resumed; only checkpoints "
            "written by train.py can. Evaluate it with eval.py instead."
        )
    extra = [o for o in given or [] if not o.startswith(("ckpt_path=", "hydra."))]
    if extra:
        raise CifarlabError(
            f"ckpt_path={path} continues its run exactly as it was configured, so "
            f"{' '.join(extra)} cannot apply. Drop {'them' if len(extra) > 1 else 'it'}, or "
            "start a new run."
        )
    resumed = OmegaConf.create(stored)
    resumed.ckpt_path = str(path)
    for node in (resumed.get("logger") or {}).values():
        if node and "tensorboard" in str(node.get("_target_", "")).lower():
            # events past the checkpoint (logged before the interrupt) are hidden, not doubled;
            # matches Lightning's class and cifarlab.callbacks.tensorboard_logger
            node.purge_step = int(ckpt.get("global_step", 0))
    return resumed


def interrupted_message(output_dir: Path, last_ckpt: str | None) -> str:
    if last_ckpt and Path(last_ckpt).is_file():
        return (
            f"Training was interrupted; the last completed epoch is saved in {last_ckpt}. "
            f"Continue the run with: train.py ckpt_path={last_ckpt}"
        )
    return (
        f"Training was interrupted before its first epoch completed, so {output_dir} holds no "
        "checkpoint to continue from; start the run again."
    )
