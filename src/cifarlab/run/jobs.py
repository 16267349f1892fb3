"""The two jobs behind train.py and eval.py, readable top to bottom.

A training run is build -> fit -> test -> report: the objects come from the config
(cifarlab.run.build), ``fit`` trains them (an interrupt is recorded and ends the job), the best
checkpoint is tested, and rank 0 writes metrics.json and the per-class chart
(cifarlab.run.records).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from cifarlab.callbacks.error_analysis import ErrorAnalysis
from cifarlab.callbacks.provenance import RunProvenance
from cifarlab.callbacks.temperature import TemperatureFit
from cifarlab.errors import CifarlabError
from cifarlab.files import FileWriteError, write_json
from cifarlab.inference.calibration import temperature_path
from cifarlab.run.build import build_eval_task, build_fit_trainer, build_task
from cifarlab.run.checkpoints import load_checkpoint
from cifarlab.run.loggers import finish_runs
from cifarlab.run.provenance import CHECKPOINT_KEY, describe_commit, own_folder, record_run
from cifarlab.run.quiet_console import quiet_console
from cifarlab.run.records import fit_outcome, record_failed_write, record_interrupt, report_results
from cifarlab.run.resume import resume_config
from cifarlab.run.trainer import build_trainer
from cifarlab.run.tune import find_lr
from cifarlab.run.workers import sigterm_reaches_workers
from cifarlab.training.module import ClassifierModule
from cifarlab.utils import log


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
    (a SIGTERM to this process reaches them: cifarlab.run.workers.sigterm_reaches_workers)."""
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
