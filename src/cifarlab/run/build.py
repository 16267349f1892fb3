"""Builds a run's objects from its composed config: the DataModule and the ClassifierModule, the
callbacks and loggers of conf/callbacks/ and conf/logger/, and the Trainer that fits them.

Everything a mistake in the config can break is built here, before any training starts, so a bad
value stops the run with one paragraph and leaves no run directory behind.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    ProgressBar,
)
from omegaconf import DictConfig

from cifarlab.callbacks.checkpoint_state import (
    ConfigInCheckpoint,
    RandomStates,
    ResumableTrainingState,
)
from cifarlab.callbacks.divergence import DivergenceGuard
from cifarlab.callbacks.provenance import RunProvenance
from cifarlab.config.learning import data_conflict
from cifarlab.data import CIFAR10DataModule
from cifarlab.errors import CifarlabError
from cifarlab.run.checkpoints import AtomicCheckpointIO
from cifarlab.run.provenance import own_folder
from cifarlab.run.resume import pin_logger_versions
from cifarlab.run.trainer import build_trainer
from cifarlab.training.ema import WeightEMA
from cifarlab.training.module import ClassifierModule
from cifarlab.utils import to_plain_dict


def instantiate_all(group: DictConfig | None, **overrides: dict[str, Any]) -> list[Any]:
    """Builds every ``_target_`` entry of a callbacks/logger group; null entries switch one off.

    ``overrides`` maps an entry's name to arguments that replace its configured ones.
    """
    if not group:
        return []
    built = []
    for name, node in group.items():
        if node and "_target_" in node:
            try:
                built.append(instantiate(node, **overrides.get(str(name), {})))
            except InstantiationException as err:
                if isinstance(err.__cause__, CifarlabError):  # our own check of a value
                    raise err.__cause__ from None
                raise
    return [item for item in built if item is not None]  # a factory may switch itself off


def build_task(cfg: DictConfig) -> tuple[CIFAR10DataModule, ClassifierModule]:
    """The DataModule and the ClassifierModule of a training run."""
    datamodule = CIFAR10DataModule(**to_plain_dict(cfg.data), seed=cfg.seed)
    module = ClassifierModule(
        model=to_plain_dict(cfg.model),
        class_names=datamodule.class_names,
        optimizer=to_plain_dict(cfg.optimizer),
        scheduler=to_plain_dict(cfg.get("scheduler")),
        data=to_plain_dict(datamodule.hparams),
        loss=to_plain_dict(cfg.get("loss")),
        tta=cfg.get("tta", "none"),
        batch_aug=to_plain_dict(cfg.get("batch_aug")),
    )
    return datamodule, module


def build_eval_task(
    cfg: DictConfig, ckpt: dict[str, Any]
) -> tuple[CIFAR10DataModule, ClassifierModule]:
    """The checkpoint's model on the data its run used; ``data.*`` keys that are set override it.

    ``ckpt`` is a cifarlab checkpoint as ``load_checkpoint`` returns it; one written by another
    version of cifarlab, whose settings or weights this version cannot take, is refused with
    what does not fit.
    """
    hparams = ckpt["hyper_parameters"]
    _check_known(cfg.ckpt_path, "hyper_parameters", hparams, ClassifierModule)
    stored_data = hparams.get("data") or {}
    _check_known(cfg.ckpt_path, "data settings", stored_data, CIFAR10DataModule)
    overrides = {k: v for k, v in to_plain_dict(cfg.get("data")).items() if v is not None}
    problem = data_conflict({**stored_data, **overrides})
    if problem:
        raise CifarlabError(f"The checkpoint's data settings with these overrides: {problem}")
    datamodule = CIFAR10DataModule(**{**stored_data, **overrides})
    if datamodule.class_names != hparams["class_names"]:
        raise CifarlabError(
            f"The checkpoint was trained on {len(hparams['class_names'])} classes "
            f"({', '.join(hparams['class_names'])}) but the data gives "
            f"{datamodule.num_classes} ({', '.join(datamodule.class_names)}). Drop the "
            "data.classes override, or evaluate a checkpoint trained on those classes."
        )
    module = ClassifierModule(**{**hparams, **({"tta": cfg.tta} if cfg.get("tta") else {})})
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CifarlabError(
            f"ckpt_path={cfg.ckpt_path}: its weights do not fit model={hparams['model']['name']} "
            f"as this version of cifarlab builds it ({str(err).splitlines()[0]}), so another "
            "version wrote it. Use the cifarlab version that trained it."
        ) from None
    return datamodule, module


def _check_known(ckpt_path: str, what: str, stored: dict[str, Any], built: Any) -> None:
    """Refuses stored settings that ``built`` does not take: a checkpoint of another version."""
    parameters = inspect.signature(built).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return  # takes any setting
    unknown = sorted(set(stored) - {p.name for p in parameters})
    if unknown:
        raise CifarlabError(
            f"ckpt_path={ckpt_path} was written by another version of cifarlab: its {what} hold "
            f"{', '.join(unknown)}, which this version's {built.__name__} does not take. Use the "
            "cifarlab version that trained it."
        )


def validates(cfg: DictConfig) -> bool:
    """False when the run has no validation: no images held out, or no validation batches."""
    return cfg.data.get("val_size") != 0 and cfg.trainer.get("limit_val_batches") != 0


def _checkpoint_overrides(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Without validation, a ModelCheckpoint that monitors a ``val/`` metric keeps nothing
    (``save_top_k=0``, which Lightning documents as saving no model) instead of warning every
    epoch that the metric is missing; the final weights are then tested, and ``last.ckpt`` (the
    callback without a monitor) is written as always."""
    if validates(cfg):
        return {}
    overrides = {}
    for name, node in (cfg.get("callbacks") or {}).items():
        if not node or "_target_" not in node or not str(node.get("monitor")).startswith("val/"):
            continue
        target = get_object(node._target_)  # a class, or a factory function
        if isinstance(target, type) and issubclass(target, ModelCheckpoint):
            overrides[str(name)] = {"monitor": None, "save_top_k": 0}
    return overrides


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks group, the weight average (``ema``), minus what the trainer flags turn off."""
    callbacks = instantiate_all(cfg.get("callbacks"), **_checkpoint_overrides(cfg))
    if cfg.get("ema") and cfg.ema.decay:
        callbacks.append(WeightEMA(**to_plain_dict(cfg.ema)))
    if cfg.trainer.get("enable_progress_bar") is False:  # let the flag win over the callback
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if cfg.trainer.get("enable_model_summary") is False:
        callbacks = [c for c in callbacks if not isinstance(c, ModelSummary)]
    return callbacks


def build_fit_trainer(cfg: DictConfig, record_provenance: bool = True) -> L.Trainer:
    """The Trainer of a training run, with the callbacks that keep its results safe: the config
    and random states in every checkpoint, the divergence check, the provenance (run folder and
    checkpoints; ``record_provenance=False`` for timed runs, which write nothing), atomic
    checkpoint writes."""
    callbacks = build_callbacks(cfg)
    loggers = instantiate_all(cfg.get("logger"))
    if not loggers:  # ~logger: Lightning refuses an lr monitor with nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    stored = to_plain_dict(cfg)
    pin_logger_versions(stored, loggers)
    safety = [
        ConfigInCheckpoint(stored),
        RandomStates(),
        ResumableTrainingState(),
        DivergenceGuard(cfg.get("divergence_check_every_n_steps", 100)),
        *([RunProvenance(own_folder(cfg))] if record_provenance else []),
    ]
    return build_trainer(
        cfg.trainer,
        cfg.get("hardware"),
        callbacks=[*callbacks, *safety],
        logger=loggers or False,
        **({} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}),
    )
