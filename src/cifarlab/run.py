"""The two jobs behind train.py and eval.py, readable top to bottom."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelSummary, ProgressBar
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from cifarlab.accelerators import build_trainer
from cifarlab.callbacks import stop_reason
from cifarlab.console import quiet_console
from cifarlab.data import CIFAR10DataModule
from cifarlab.ema import WeightEMA
from cifarlab.errors import CifarlabError
from cifarlab.loggers import finish_runs
from cifarlab.module import ClassifierModule, build_optimizer
from cifarlab.reliability import (
    AtomicCheckpointIO,
    ConfigInCheckpoint,
    DivergenceGuard,
    RandomStates,
    checkpoint_paths,
    divergence_message,
    interrupted_message,
    load_checkpoint,
    pin_logger_versions,
    resume_config,
)
from cifarlab.report import per_class_from, plot_per_class, print_accuracy_table
from cifarlab.tune import check_tune, find_lr
from cifarlab.utils import log, plain, write_json


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Builds every ``_target_`` entry of a callbacks/logger group; null entries switch one off."""
    if not group:
        return []
    built = []
    for node in group.values():
        if node and "_target_" in node:
            try:
                built.append(instantiate(node))
            except InstantiationException as err:
                if isinstance(err.__cause__, CifarlabError):  # our own check of a value
                    raise err.__cause__ from None
                raise
    return [item for item in built if item is not None]  # a factory may switch itself off


def _report(
    trainer: L.Trainer,
    output_dir: Path,
    stage_title: str,
    results: dict[str, float],
    classes: list[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Rank 0's metrics, returned by every DDP process; only rank 0 prints and writes files."""
    per_class = per_class_from(results, "test", classes)
    overall = float(results["test/acc"])
    metrics = {"test/acc": overall, "test/loss": float(results["test/loss"])}
    if "test/acc_no_tta" in results:  # tta on: test/acc scores the averaged views
        metrics["test/acc_no_tta"] = float(results["test/acc_no_tta"])
        stage_title += f", with TTA ({100 * metrics['test/acc_no_tta']:.2f}% without)"
    metrics = {**metrics, "test/acc_class": per_class, **extra}
    metrics = trainer.strategy.broadcast(metrics, src=0)
    if trainer.is_global_zero:
        print_accuracy_table(stage_title, overall, per_class)
        plot_per_class(output_dir / "per_class_accuracy.png", stage_title, per_class)
        write_json(output_dir / "metrics.json", metrics)
    return metrics


def _command_line_overrides() -> list[str] | None:
    """The overrides Hydra was started with; None when called without Hydra (as tests do)."""
    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fits the configured model, tests its best checkpoint, reports and returns the metrics.

    With ``ckpt_path`` set, continues the checkpoint's run with that run's own config.
    """
    start = time.perf_counter()
    quiet_console()
    cfg = resume_config(cfg, _command_line_overrides())
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = CIFAR10DataModule(**plain(cfg.data), seed=cfg.seed)
    module = ClassifierModule(
        model=plain(cfg.model),
        class_names=datamodule.class_names,
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")),
        data=plain(datamodule.hparams),
        loss=plain(cfg.get("loss")),
        tta=cfg.get("tta", "none"),
        batch_aug=plain(cfg.get("batch_aug")),
    )
    build_optimizer(module.net, module.hparams.optimizer)  # a bad one stops us before fit
    check_tune(cfg.get("tune"))
    if cfg.get("tune"):
        return find_lr(cfg, module, datamodule, output_dir)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    if cfg.get("ema") and cfg.ema.decay:
        callbacks.append(WeightEMA(**plain(cfg.ema)))
    if cfg.trainer.get("enable_progress_bar") is False:  # let the flag win over the callback
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if cfg.trainer.get("enable_model_summary") is False:
        callbacks = [c for c in callbacks if not isinstance(c, ModelSummary)]
    loggers = _instantiate_all(cfg.get("logger"))
    if not loggers:  # ~logger: Lightning refuses an lr monitor with nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    stored = plain(cfg)
    pin_logger_versions(stored, loggers)
    safety = [
        ConfigInCheckpoint(stored),
        RandomStates(),
        DivergenceGuard(cfg.get("divergence_check_every_n_steps", 100)),
    ]
    trainer = build_trainer(
        cfg.trainer,
        callbacks=[*callbacks, *safety],
        logger=loggers or False,
        **({} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}),
    )
    log.info("Output directory: %s", output_dir)
    try:
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True
        )
    except SystemExit as err:
        # Lightning ends fit on Ctrl-C / SIGTERM by SystemExit, after its hooks ran
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        _record_interrupt(trainer, output_dir, start)
        raise SystemExit(143 if isinstance(err, SIGTERMException) else 130) from None
    # callback_metrics also reach this process when spawned/forked DDP workers did the training
    problem = divergence_message(trainer.callback_metrics)
    status = "diverged" if problem else "completed"
    if problem:
        log.error("%s", problem)
    best_score = trainer.callback_metrics.get("val/acc_best")
    epochs = int(trainer.callback_metrics.get("train/epochs", trainer.current_epoch))

    best, last = checkpoint_paths(trainer)
    extra = {
        "val/acc_best": float(best_score) if best_score is not None else None,
        "status": status,
        **({"message": problem} if problem else {}),
        "stop_reason": "diverged (non-finite loss)" if problem else stop_reason(trainer),
        "epochs": epochs,
        "wall_time_s": round(time.perf_counter() - start, 2),
        "model": cfg.model.name,
        "num_params": sum(p.numel() for p in module.net.parameters()),
        "best_ckpt": best,
        "last_ckpt": last,
        "output_dir": str(output_dir),
    }
    if status == "diverged" and not best:
        if trainer.is_global_zero:
            write_json(output_dir / "metrics.json", extra)
        return extra
    results = trainer.test(
        module, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True
    )[0]
    finish_runs(trainer)
    return _report(
        trainer,
        output_dir,
        f"{cfg.model.name} test accuracy ({epochs} epochs)",
        results,
        datamodule.class_names,
        extra,
    )


def _record_interrupt(trainer: L.Trainer, output_dir: Path, start: float) -> None:
    """Says where the last completed epoch is, in metrics.json and on stderr (rank 0 only).

    Under ddp_spawn/ddp_fork this process did not train, so what it knows comes from the files
    the workers wrote (last.ckpt and the epoch it holds).
    """
    if not trainer.is_global_zero:
        return
    best, last = checkpoint_paths(trainer)
    epochs = trainer.current_epoch
    if last and Path(last).is_file():
        epochs = int(torch.load(last, map_location="cpu", weights_only=True)["epoch"]) + 1
    message = interrupted_message(output_dir, last)
    write_json(
        output_dir / "metrics.json",
        {
            "status": "interrupted",
            "message": message,
            "epochs": epochs,
            "wall_time_s": round(time.perf_counter() - start, 2),
            "best_ckpt": best,
            "last_ckpt": last,
            "output_dir": str(output_dir),
        },
    )
    print(f"\n{message}\n", file=sys.stderr)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Tests a checkpoint on the test split its run used; data settings may be overridden."""
    start = time.perf_counter()
    quiet_console()
    output_dir = Path(cfg.paths.output_dir)
    ckpt = load_checkpoint(cfg.get("ckpt_path"))
    hparams = ckpt["hyper_parameters"]
    overrides = {k: v for k, v in plain(cfg.get("data")).items() if v is not None}
    data_cfg = {**hparams["data"], **overrides}
    datamodule = CIFAR10DataModule(**data_cfg)
    if datamodule.class_names != hparams["class_names"]:
        raise CifarlabError(
            f"The checkpoint was trained on {len(hparams['class_names'])} classes "
            f"({', '.join(hparams['class_names'])}) but the data gives "
            f"{datamodule.num_classes} ({', '.join(datamodule.class_names)}). Drop the "
            "data.classes override, or evaluate a checkpoint trained on those classes."
        )
    module = ClassifierModule(**{**hparams, **({"tta": cfg.tta} if cfg.get("tta") else {})})
    module.load_state_dict(ckpt["state_dict"])
    L.seed_everything(cfg.seed, workers=True)
    trainer = build_trainer(cfg.trainer, logger=False, callbacks=[])
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    return _report(
        trainer,
        output_dir,
        f"{hparams['model']['name']} test accuracy ({Path(cfg.ckpt_path).name})",
        results,
        datamodule.class_names,
        {
            "status": "completed",
            "ckpt_path": str(cfg.ckpt_path),
            "model": hparams["model"]["name"],
            "wall_time_s": round(time.perf_counter() - start, 2),
            "output_dir": str(output_dir),
        },
    )
