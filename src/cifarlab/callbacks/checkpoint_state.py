"""What every checkpoint of a run carries beyond the weights, so that it continues that run:
the run's config, the random states, and a check that its training state fits this version.

A run's full config travels inside every checkpoint it writes (as plain containers), so
``train.py ckpt_path=<run>/checkpoints/last.ckpt`` alone continues that run exactly as it was
configured (cifarlab.run.resume).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

from cifarlab.errors import CifarlabError
from cifarlab.run.checkpoints import CONFIG_KEY
from cifarlab.training.optimizers import resume_problem

RNG_KEY = "cifarlab_rng_states"


class ConfigInCheckpoint(L.Callback):
    """Stores the run's resolved config in every checkpoint, so resuming needs nothing else."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config


class RandomStates(L.Callback):
    """Saves the random number generators' states in every checkpoint and restores them on resume.

    Dropout draws from torch's global generator; without its state a resumed run would draw other
    masks than the uninterrupted run. The data's shuffles and crops have their own generators,
    seeded by (seed, epoch). Checkpoints are written at the end of an epoch, after which nothing
    draws until the next epoch's first step, so the restored state is the one that step saw.
    """

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint[RNG_KEY] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get(RNG_KEY)
        if not states:  # a checkpoint written without this callback
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


class ResumableTrainingState(L.Callback):
    """Names a checkpoint whose optimizer or schedule state this version cannot continue.

    Lightning restores the optimizer and the schedule after the callbacks' ``on_load_checkpoint``;
    without this check, a checkpoint of another cifarlab version that grouped the parameters or
    kept the schedule differently would end deep inside torch's ``load_state_dict``.
    """

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        problem = resume_problem(checkpoint, pl_module.net, pl_module.hparams.optimizer)
        if problem:
            raise CifarlabError(
                f"This checkpoint cannot be resumed by this version of cifarlab: {problem}. Its "
                "weights still load: test it with eval.py, use it with predict.py or export.py, "
                "or start a new run with the same settings."
            )
