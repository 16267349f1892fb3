"""Checkpoints that are safe to keep and to load: atomic writes, where a run's are, and loading
with ``weights_only=True``.

What a checkpoint holds beyond the weights (the run's config, the random states) is
cifarlab.callbacks.checkpoint_state's. Every load of a checkpoint uses ``weights_only=True``: a
file that would run code when unpickled is refused before any of its code runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import TorchCheckpointIO

from cifarlab.errors import CifarlabError
from cifarlab.files import save_torch, write_atomic

# where cifarlab.callbacks.checkpoint_state puts the run's config in a checkpoint
CONFIG_KEY = "cifarlab_config"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    Lightning's own save stages the file in the system temp folder and *moves* it, which is a
    copy (and can be cut half-way) whenever that folder is on another file system. A write the
    disk refuses raises ``FileWriteError`` (path and reason), the previous file kept.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        write_atomic(Path(path), lambda tmp: save_torch(checkpoint, tmp))


def checkpoint_paths(trainer: L.Trainer) -> tuple[str | None, str | None]:
    """The best checkpoint and last.ckpt, from the run's two ``ModelCheckpoint`` callbacks.

    conf/callbacks/default.yaml lists the best (``val/acc``) first: it is Lightning's
    ``trainer.checkpoint_callback``; without validation it keeps nothing (cifarlab.run.build), so
    there is no best one. The next one without a monitor keeps the latest epoch.
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


def load_checkpoint(path: str | None, purpose: str = "eval.py") -> dict[str, Any]:
    """Reads a cifarlab checkpoint with ``weights_only=True``: tensors and plain containers only.

    Anything else, another project's Lightning checkpoint or a bare state_dict, is refused with
    what the file is and what it lacks (``checkpoint_problem``) before any of it is used.
    """
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
        # torch names the first object it refused: "Unsupported global: GLOBAL a.b.C ..."
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        asks = f"its pickle asks for {refused[1]}" if refused else "it cannot be read as one"
        raise CifarlabError(
            f"ckpt_path={path} is not a checkpoint cifarlab can load safely: {asks}, while only "
            f"tensors and plain containers are accepted ({type(err).__name__}). Pass a .ckpt "
            "written by train.py."
        ) from None
    problem = checkpoint_problem(ckpt)
    if problem:
        raise CifarlabError(
            f"ckpt_path={path} is not a cifarlab checkpoint: {problem}. Pass a .ckpt written by "
            "cifarlab's train.py."
        )
    return ckpt


def checkpoint_problem(ckpt: Any) -> str | None:
    """What a loaded file is and what it lacks, when it is not a cifarlab checkpoint (the
    hyperparameters that rebuild the network: ``model`` with its name and width, and
    ``class_names``); None when it is one."""
    if not isinstance(ckpt, dict):
        return f"it is a {type(ckpt).__name__}, not a dict of weights and settings"
    if "state_dict" not in ckpt:
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return (
                "it is a bare state_dict (parameter names and tensors, like export.py's "
                "format=state_dict), without the hyperparameters that say which network it fits"
            )
        return (
            f"it is no Lightning checkpoint either, having no state_dict (it holds {_keys(ckpt)})"
        )
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict):
        return (
            "it is a Lightning checkpoint without hyper_parameters (its module never called "
            "save_hyperparameters), so nothing in it says which network its weights fit"
        )
    missing = [k for k in ("model", "class_names") if k not in hparams]
    if missing:
        kind = "of another cifarlab version" if CONFIG_KEY in ckpt else "of another project"
        return (
            f"it is a Lightning checkpoint {kind}: its hyper_parameters have no "
            f"{'/'.join(missing)} (they hold {_keys(hparams)})"
        )
    model, class_names = hparams["model"], hparams["class_names"]
    if (
        not isinstance(model, dict)
        or not isinstance(model.get("name"), str)
        or "width" not in model
        or not isinstance(class_names, list)
        or not all(isinstance(name, str) for name in class_names)
    ):
        return (
            "its hyper_parameters are not this version's: model needs a name and a width "
            f"(it is {model!r:.80}) and class_names a list of names (it is {class_names!r:.80})"
        )
    return None


def _keys(mapping: dict[Any, Any]) -> str:
    """The first keys of a mapping, for a message."""
    names = [str(k) for k in mapping]
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return ", ".join(names[:8]) + more if names else "nothing"
