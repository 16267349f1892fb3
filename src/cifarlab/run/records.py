"""What a run leaves in metrics.json: how its fit ended, its test results, or where an interrupt
or a failed write left it. Rank 0 writes and prints; every DDP process returns the same metrics.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from cifarlab.callbacks.divergence import divergence_message
from cifarlab.callbacks.early_stopping import stop_reason
from cifarlab.callbacks.trial_pruning import pruned_epoch
from cifarlab.files import FileWriteError, write_json
from cifarlab.review.analysis import read_analysis
from cifarlab.review.report import (
    per_class_from,
    plot_per_class,
    print_accuracy_table,
    print_analysis,
)
from cifarlab.run.checkpoints import checkpoint_paths
from cifarlab.training.module import ClassifierModule
from cifarlab.utils import log


def ended_record(
    status: str,
    message: str,
    epochs: int,
    start: float,
    checkpoints: tuple[str | None, str | None],
    output_dir: Path,
) -> dict[str, Any]:
    """metrics.json of a fit that ended before its test: ``status`` and why (``message``), the
    epochs done, the time since ``start`` and the (best, last) checkpoints it left."""
    best, last = checkpoints
    return {
        "status": status,
        "message": message,
        "epochs": epochs,
        "wall_time_s": round(time.perf_counter() - start, 2),
        "best_ckpt": best,
        "last_ckpt": last,
        "output_dir": str(output_dir),
    }


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
    record = ended_record("interrupted", message, epochs, start, (best, last), output_dir)
    write_json(output_dir / "metrics.json", record)
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
    record = ended_record(
        "failed", f"{err}{resume}", trainer.current_epoch, start, (best, last), output_dir
    )
    with contextlib.suppress(FileWriteError):
        write_json(output_dir / "metrics.json", record)


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
