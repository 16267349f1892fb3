"""The two jobs behind train.py and eval.py, readable top to bottom.

A training run is build -> fit -> test -> report: the objects come from the config
(cifarlab.build), ``fit`` trains them (an interrupt is recorded and ends the job), the best
checkpoint is tested, and rank 0 writes metrics.json and the per-class chart.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from cifarlab.accelerators import build_trainer, sigterm_reaches_workers
from cifarlab.analysis import ErrorAnalysis, read_analysis, temperature_path
from cifarlab.build import build_eval_task, build_fit_trainer, build_task
from cifarlab.calibration import TemperatureFit
from cifarlab.callbacks import stop_reason
from cifarlab.checkpoints import checkpoint_paths, load_checkpoint
from cifarlab.console import quiet_console
from cifarlab.divergence import divergence_message
from cifarlab.errors import CifarlabError
from cifarlab.loggers import finish_runs
from cifarlab.module import ClassifierModule
from cifarlab.provenance import (
    CHECKPOINT_KEY,
    RunProvenance,
    describe_commit,
    own_folder,
    record_run,
)
from cifarlab.pruning import pruned_epoch
from cifarlab.report import (
    per_class_from,
    plot_per_class,
    print_accuracy_table,
    print_analysis,
)
from cifarlab.resume import interrupted_message, resume_config
from cifarlab.tune import find_lr
from cifarlab.utils import FileWriteError, log, write_json


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fits the configured model, tests its best checkpoint, reports and returns the metrics.

    With ``ckpt_path`` set, continues the checkpoint's run with that run's own config.
    """
    start = time.perf_counter()
    quiet_console()
    cfg = resume_config(cfg, _command_line_overrides())
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module = build_task(cfg)
    if cfg.get("tune"):
        record_run(own_folder(cfg), device=cfg.trainer.get("accelerator", "auto"))
        return find_lr(cfg, module, datamodule, output_dir)
    trainer = build_fit_trainer(cfg)
    log.info("Output directory: %s", output_dir)
    try:
        fit(trainer, module, datamodule, cfg, start)
    except FileWriteError as err:  # a full disk or a folder gone read-only
        record_failed_write(trainer, output_dir, err, start)
        raise
    outcome = fit_outcome(trainer, module, cfg, start)
    # a pruned search trial is not worth a test; a diverged run without a checkpoint has no model
    if outcome["status"] == "pruned" or (
        outcome["status"] == "diverged" and not outcome["best_ckpt"]
    ):
        finish_runs(trainer)
        if trainer.is_global_zero:
            write_json(output_dir / "metrics.json", outcome)
        return outcome
    results = trainer.test(
        module,
        datamodule=datamodule,
        ckpt_path=outcome["best_ckpt"] or None,
        verbose=False,
        weights_only=True,
    )[0]
    finish_runs(trainer)
    title = f"{cfg.model.name} test accuracy ({outcome['epochs']} epochs)"
    return report_results(trainer, output_dir, title, results, datamodule.class_names, outcome)


def fit(
    trainer: L.Trainer,
    module: ClassifierModule,
    datamodule: L.LightningDataModule,
    cfg: DictConfig,
    start: float,
) -> None:
    """``trainer.fit``, from ``ckpt_path`` when resuming; an interrupt (Ctrl-C, SIGTERM) is
    recorded and ends the job with exit code 130/143, also where ddp_spawn/ddp_fork workers train
    (a SIGTERM to this process reaches them: cifarlab.accelerators.sigterm_reaches_workers)."""
    try:
        with sigterm_reaches_workers(trainer):
            trainer.fit(
                module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True
            )
    except SystemExit as err:
        # Lightning ends fit on Ctrl-C / SIGTERM by SystemExit, after its hooks ran
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        record_interrupt(trainer, Path(cfg.paths.output_dir), start)
        raise SystemExit(143 if isinstance(err, SIGTERMException) else 130) from None


def fit_outcome(
    trainer: L.Trainer, module: ClassifierModule, cfg: DictConfig, start: float
) -> dict[str, Any]:
    """What the fit left: status, why it stopped, epochs, time, checkpoints (for metrics.json)."""
    # callback_metrics also reach this process when spawned/forked DDP workers did the training
    problem = divergence_message(trainer.callback_metrics)
    if problem:
        log.error("%s", problem)
    best_score = trainer.callback_metrics.get("val/acc_best")
    best, last = checkpoint_paths(trainer)
    pruned = pruned_epoch(trainer)
    status, reason = "completed", stop_reason(trainer)
    if problem:
        status, reason = "diverged", "diverged (non-finite loss)"
    elif pruned is not None:
        status, reason = "pruned", f"pruned by the search after epoch {pruned}"
    return {
        "val/acc_best": float(best_score) if best_score is not None else None,
        "status": status,
        **({"message": problem} if problem else {}),
        "stop_reason": reason,
        "epochs": int(trainer.callback_metrics.get("train/epochs", trainer.current_epoch)),
        "wall_time_s": round(time.perf_counter() - start, 2),
        "model": cfg.model.name,
        "num_params": sum(p.numel() for p in module.net.parameters()),
        "best_ckpt": best,
        "last_ckpt": last,
        "output_dir": str(Path(cfg.paths.output_dir)),
    }


def report_results(
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
    analysis = read_analysis(output_dir) if trainer.is_global_zero else {}
    metrics = {**metrics, "test/acc_class": per_class, **analysis, **extra}
    metrics = trainer.strategy.broadcast(metrics, src=0)
    if trainer.is_global_zero:
        print_accuracy_table(stage_title, overall, per_class)
        print_analysis(metrics)
        plot_per_class(output_dir / "per_class_accuracy.png", stage_title, per_class)
        write_json(output_dir / "metrics.json", metrics)
    return metrics


def record_interrupt(trainer: L.Trainer, output_dir: Path, start: float) -> None:
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


def record_failed_write(
    trainer: L.Trainer, output_dir: Path, err: FileWriteError, start: float
) -> None:
    """metrics.json says the run failed, why, and what is kept, when it can still be written
    (rank 0 only): a full disk may refuse it too, and then the error on stderr is the record."""
    if not trainer.is_global_zero:
        return
    best, last = (p if p and Path(p).is_file() else None for p in checkpoint_paths(trainer))
    resume = f" Continue from the last completed epoch: train.py ckpt_path={last}" if last else ""
    with contextlib.suppress(FileWriteError):
        write_json(
            output_dir / "metrics.json",
            {
                "status": "failed",
                "message": f"{err}{resume}",
                "epochs": trainer.current_epoch,
                "wall_time_s": round(time.perf_counter() - start, 2),
                "best_ckpt": best,
                "last_ckpt": last,
                "output_dir": str(output_dir),
            },
        )


def _command_line_overrides() -> list[str] | None:
    """The overrides Hydra was started with; None when called without Hydra (as tests do)."""
    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Tests a checkpoint on the test split its run used; data settings may be overridden."""
    start = time.perf_counter()
    quiet_console()
    output_dir = Path(cfg.paths.output_dir)
    ckpt = load_checkpoint(cfg.get("ckpt_path"))
    datamodule, module = build_eval_task(cfg, ckpt)
    L.seed_everything(cfg.seed, workers=True)
    calibrate = check_calibrate(cfg, datamodule)
    sidecar = temperature_path(cfg.ckpt_path)
    callbacks = [
        RunProvenance(own_folder(cfg)),
        ErrorAnalysis(output_dir, temperature_path=sidecar if calibrate else None),
    ]
    if calibrate:
        callbacks.append(TemperatureFit(sidecar, str(cfg.ckpt_path)))
    trainer = build_trainer(cfg.trainer, cfg.get("hardware"), logger=False, callbacks=callbacks)
    made_by = ckpt.get(CHECKPOINT_KEY) or {"git_commit": "unknown (the checkpoint records none)"}
    if trainer.is_global_zero:
        print(f"Checkpoint {cfg.ckpt_path} was trained at commit {describe_commit(made_by)}")
    if calibrate:  # writes the temperature beside the checkpoint, which the test then applies
        trainer.validate(module, datamodule=datamodule, verbose=False)
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    model = ckpt["hyper_parameters"]["model"]["name"]
    return report_results(
        trainer,
        output_dir,
        f"{model} test accuracy ({Path(cfg.ckpt_path).name})",
        results,
        datamodule.class_names,
        {
            "status": "completed",
            "ckpt_path": str(cfg.ckpt_path),
            "ckpt_commit": made_by.get("git_commit"),
            "ckpt_dirty": made_by.get("git_dirty"),
            "model": model,
            "wall_time_s": round(time.perf_counter() - start, 2),
            "output_dir": str(output_dir),
        },
    )


def check_calibrate(cfg: DictConfig, datamodule: L.LightningDataModule) -> bool:
    """``calibrate=true`` needs images held out from training to fit the temperature on."""
    calibrate = cfg.get("calibrate", False)
    if calibrate and datamodule.val_size == 0:
        raise CifarlabError(
            "calibrate=true fits the temperature on the validation split, and this checkpoint's "
            "run held none out (data.val_size=0). Set data.val_size=N (e.g. 5000) to hold out "
            "N training images; never fit it on the test split it is judged on."
        )
    return calibrate
