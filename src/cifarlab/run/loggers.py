"""The loggers of ``logger=tensorboard|mlflow|wandb``: Lightning's, with the run named by what
sets a sweep's job apart.

MLflow and Weights & Biases are extras (``uv sync --extra mlflow``) so the default install stays
lean; their factories say how to install one that is missing instead of failing deep inside
Lightning. TensorBoard and CSV need nothing extra (CSV is Lightning's own, conf/logger/csv.yaml).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

from cifarlab.errors import CifarlabError
from cifarlab.sweeps.plan import job_name


def tensorboard_logger(
    save_dir: str, name: str = "tensorboard", **kwargs: Any
) -> TensorBoardLogger:
    """Lightning's TensorBoardLogger whose run folder, in a multirun, is named by the overrides.

    ``tensorboard --logdir <sweep dir>`` then lists
    ``0/tensorboard/model.width=32,optimizer.lr=0.01`` instead of ``0/tensorboard``; a single run
    keeps ``<run dir>/tensorboard/``.
    """
    kwargs.setdefault("version", job_name())
    kwargs.setdefault("default_hp_metric", False)
    return TensorBoardLogger(save_dir=save_dir, name=name, **kwargs)


def _require(module: str, extra: str, logger: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise CifarlabError(
            f"logger={logger} needs the {module} package, which is not installed. Install the "
            f"extra with: uv sync --extra {extra} (or pip install 'cifarlab[{extra}]'), or pick "
            "another logger (logger=tensorboard, logger=csv)."
        )


def mlflow_logger(
    tracking_uri: str, experiment_name: str = "cifarlab", run_name: str | None = None, **kwargs: Any
) -> MLFlowLogger:
    """Lightning's MLFlowLogger; the run is named by the sweep's overrides in a multirun.

    MLflow 3 refuses a plain folder (``file:``) store unless ``MLFLOW_ALLOW_FILE_STORE=true``, so
    the default is a SQLite file (its tables are created on first use, which takes a while).
    """
    _require("mlflow", "mlflow", "mlflow")
    return MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name or job_name() or None,
        tracking_uri=tracking_uri,
        **kwargs,
    )


def wandb_logger(
    save_dir: str, project: str = "cifarlab", name: str | None = None, **kwargs: Any
) -> WandbLogger:
    """Lightning's WandbLogger; ``logger.wandb.offline=true`` (or WANDB_MODE=offline) logs to
    disk only, for ``wandb sync`` later."""
    _require("wandb", "wandb", "wandb")
    return WandbLogger(
        save_dir=save_dir, project=project, name=name or job_name() or None, **kwargs
    )


def finish_runs(trainer: L.Trainer) -> None:
    """Closes W&B runs at the end of a job: Lightning leaves them open until the process exits,
    so the test metrics would not be flushed yet and the next job of a multirun (same process)
    would log into the same run."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()
