"""What keeps a run's results safe: atomic checkpoints, exact resume, divergence and interrupts.

A run's full config travels inside every checkpoint it writes (as plain containers), so
``train.py ckpt_path=<run>/checkpoints/last.ckpt`` alone continues that run exactly as it was
configured, in its own directory. Every load of a checkpoint uses ``weights_only=True``: a file
that would run code when unpickled is refused before any of its code runs.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from cifarlab.errors import CifarlabError
from cifarlab.utils import write_atomic

CONFIG_KEY = "cifarlab_config"
RNG_KEY = "cifarlab_rng_states"
# where a resumed run may differ from the run it continues: where things are, and on what hardware
SETUP_KEYS = ("data.root", "paths.*", "trainer.accelerator", "trainer.devices")
# what DivergenceGuard leaves in trainer.callback_metrics (which also reach a ddp_spawn/fork parent)
DIVERGED_KEYS = ("diverged/epoch", "diverged/batch", "diverged/loss")


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


def checkpoint_paths(trainer: L.Trainer) -> tuple[str | None, str | None]:
    """The best checkpoint and last.ckpt, from the run's two ``ModelCheckpoint`` callbacks.

    conf/callbacks/default.yaml lists the best (``val/acc``) first: it is Lightning's
    ``trainer.checkpoint_callback``. The next one without a monitor keeps the latest epoch.
    ``ddp_spawn``/``ddp_fork`` train in worker processes and hand back only the first callback's
    best path, so this process falls back to the file that the second one writes.
    """
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    if not callbacks:
        return None, None
    best, last = callbacks[0].best_model_path or None, None
    for callback in callbacks[1:]:
        if callback.monitor is not None:
            continue
        last = callback.best_model_path
        if not last and callback.dirpath:
            written = callback.format_checkpoint_name({})
            last = written if Path(written).is_file() else ""
        last = last or None
        break
    return best, last


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
        if not states:  # a checkpoint from before this callback existed
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


class DivergenceGuard(L.Callback):
    """Stops training, on every process together, once a training loss is not a finite number.

    Reading the loss back each step would make every step wait for the device, so the check is
    kept on the device (a count of non-finite losses, and the first one's batch and value) and read
    every ``check_every_n_steps`` batches, at the last batch of the epoch and before any
    validation, the only points where the run can save a checkpoint. The count is summed over all
    processes, so every rank stops at the same batch and none waits in a collective for the others.

    Stopping leaves Lightning's loops as an early stop does (``StopIteration``, which Lightning's
    fit and epoch loops end on), before that epoch's validation and before the checkpoint
    callbacks' ``on_train_epoch_end`` (this callback's hook runs first: Lightning calls
    checkpoint callbacks last). So no checkpoint of the broken weights is written, ``fit`` returns
    normally under every strategy, and ``diverged/*`` in ``trainer.callback_metrics`` says where.
    """

    def __init__(self, check_every_n_steps: int = 100) -> None:
        if not isinstance(check_every_n_steps, int) or check_every_n_steps < 1:
            raise CifarlabError(
                f"divergence_check_every_n_steps={check_every_n_steps!r} must be a whole number "
                ">= 1 (how many training steps pass between reads of the loss check)."
            )
        self.every = check_every_n_steps
        self.diverged = False
        self._count: torch.Tensor | None = None
        self._first: torch.Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.diverged = False
        self._count = self._first = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            self._record(loss.detach().float(), batch_idx)
        if self._due(trainer, batch_idx) and self._any_diverged(trainer):
            raise StopIteration

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.diverged:  # ends the fit loop before the checkpoint callbacks' epoch-end saves
            raise StopIteration

    def _record(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Counts a non-finite loss and keeps the first one's (batch, value), all on the device."""
        if self._count is None or self._first is None:
            self._count = torch.zeros((), dtype=torch.int32, device=loss.device)
            self._first = torch.full((2,), -1.0, dtype=torch.float64, device=loss.device)
        bad = ~torch.isfinite(loss)
        new = torch.stack((torch.full_like(loss, batch_idx, dtype=torch.float64), loss.double()))
        self._first = torch.where(bad & (self._count == 0), new, self._first)
        self._count += bad

    def _due(self, trainer: L.Trainer, batch_idx: int) -> bool:
        done = batch_idx + 1
        val_every = trainer.val_check_batch
        before_validation = isinstance(val_every, int) and val_every > 0 and done % val_every == 0
        return done % self.every == 0 or done >= trainer.num_training_batches or before_validation

    def _any_diverged(self, trainer: L.Trainer) -> bool:
        if self._count is None or self._first is None:
            return False
        count = trainer.strategy.reduce(self._count.clone(), reduce_op="sum")
        if int(count) == 0:  # the one read of the device: every N steps, not every step
            return False
        # the earliest non-finite loss of any process, for the message rank 0 reports
        with warnings.catch_warnings():  # Lightning's all_gather calls a deprecated torch one
            warnings.filterwarnings("ignore", message=".*all_gather is deprecated")
            firsts = trainer.strategy.all_gather(self._first).reshape(-1, 2).cpu()
        batch, value = min((row for row in firsts.tolist() if row[0] >= 0), key=lambda r: r[0])
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


def _is_setup(key: str) -> bool:
    return any(key == k or (k.endswith("*") and key.startswith(k[:-1])) for k in SETUP_KEYS)


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """Every leaf of a plain config tree by its dotted key (lists are leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    leaves: dict[str, Any] = {}
    for key, child in value.items():
        leaves.update(_leaves(child, f"{prefix}.{key}" if prefix else str(key)))
    return leaves


def _get(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _given_value(cfg: DictConfig, key: str) -> Any:
    """The composed value of ``key`` as plain data; interpolations (values derived from other
    keys, like ``${paths.output_dir}/checkpoints``) stay unresolved, so they are not compared."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return None
    return _get(OmegaConf.to_container(parent, resolve=False), leaf)


def _relocate(tree: Any, old: str, new: str) -> Any:
    """Rewrites every path in ``tree`` under ``old`` to lie under ``new`` (a moved run folder)."""
    if isinstance(tree, dict):
        return {k: _relocate(v, old, new) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_relocate(v, old, new) for v in tree]
    if isinstance(tree, str) and (tree == old or tree.startswith(old.rstrip("/") + "/")):
        return new + tree[len(old) :]
    return tree


def resume_config(cfg: DictConfig, given: list[str] | None = None) -> DictConfig:
    """The config that continues the run a checkpoint came from, or ``cfg`` for a fresh run.

    ``given`` are the command-line overrides (Hydra's). A resumed run keeps its own settings:
    changing the model, data or schedule halfway would not continue that run, so an override that
    changes one is refused. An override equal to the run's own value is accepted (the same command
    plus ``ckpt_path`` resumes), and the setup keys (``SETUP_KEYS``: where the data and outputs
    are, which hardware) may change, so a run can move to another machine; paths under a moved
    ``paths.*`` folder (checkpoints, logs) move with it.
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
    refused, setup = [], {}
    for override in OverridesParser.create().parse_overrides(list(given or [])):
        key = override.get_key_element().lstrip("+~").replace("/", ".")
        if key == "ckpt_path" or key == "hydra" or key.startswith("hydra."):
            continue
        old = _leaves(_get(stored, key), key)
        new = _leaves(_given_value(cfg, key), key)
        changed = {
            k: new.get(k)
            for k in old.keys() | new.keys()
            if old.get(k) != new.get(k) and not (isinstance(new.get(k), str) and "${" in new[k])
        }
        if any(not _is_setup(k) for k in changed):
            refused.append(override.input_line)
        setup.update(changed)
    if refused:
        raise CifarlabError(
            f"ckpt_path={path} continues its run exactly as it was configured, so "
            f"{' '.join(refused)} cannot apply (only {', '.join(SETUP_KEYS)} may change on "
            f"resume). Drop {'them' if len(refused) > 1 else 'it'}, or start a new run."
        )
    for key, value in sorted(setup.items()):
        old_value = _get(stored, key)
        if not key.startswith("trainer.") and isinstance(old_value, str):
            stored = _relocate(stored, old_value, str(value))
    resumed = OmegaConf.create(stored)
    for key, value in setup.items():
        OmegaConf.update(resumed, key, value, force_add=True)
    resumed.ckpt_path = str(path)
    for node in (resumed.get("logger") or {}).values():
        if node and "tensorboard" in str(node.get("_target_", "")).lower():
            # events past the checkpoint (logged before the interrupt) are hidden, not doubled;
            # matches Lightning's class and cifarlab.callbacks.tensorboard_logger
            node.purge_step = int(ckpt.get("global_step", 0))
    return resumed


def pin_logger_versions(config: dict[str, Any], loggers: list[Any]) -> None:
    """Writes each TensorBoard logger's folder name into the config stored in checkpoints.

    In a multirun the folder is named by the job's overrides (cifarlab.callbacks), which a resumed
    job, started as a single run, could not know; Lightning's own class would pick a new
    ``version_N``. With the name pinned, a resumed run logs into, and purges, its own folder.
    """
    nodes = [n for n in (config.get("logger") or {}).values() if n and "_target_" in n]
    for node, logger in zip(nodes, loggers, strict=False):
        if isinstance(logger, TensorBoardLogger) and node.get("version") is None:
            node["version"] = logger.version


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
