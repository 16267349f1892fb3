"""The keys of how and where a run happens: the Trainer, the hardware settings, the callbacks and
loggers, the paths.

The trainer, callback and logger nodes are built by Hydra (``_target_``). Lightning's classes take
more arguments than conf/ sets (``+trainer.gradient_clip_algorithm=value``): those are declared
open (``extra="allow"``) and Lightning checks them as it builds them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict

from cifarlab.config.schema import Built, Section, key

_LIMIT = "batches per epoch (a whole number) or a fraction of them; null = all"


class Trainer(Built):
    """lightning.pytorch.Trainer: what cifarlab sets differently or users often change"""

    model_config = ConfigDict(extra="allow")
    default_root_dir: str | None = key("Lightning's root folder (the run folder)")
    accelerator: str = key("cpu | gpu | cuda | mps | auto (CUDA, else MPS, else CPU)", setup=True)
    strategy: str = key("auto | ddp | ddp_spawn | ddp_fork (trainer=ddp, trainer=ddp_cpu)")
    devices: int | str | list[int] = key(
        "how many devices, or which: 1, 2, auto, [0,1]", setup=True
    )
    num_nodes: int = key("machines of one run (under SLURM)", ge=1)
    precision: int | str | None = key("e.g. bf16-mixed, 16-mixed, 32; null = Lightning's (32)")
    max_epochs: int | None = key("epochs to train; -1 = no limit", ge=-1)
    max_steps: int = key("optimizer steps to train at most; -1 = no limit", ge=-1)
    max_time: str | dict | None = key("wall-clock limit, e.g. 00:12:00:00 (DD:HH:MM:SS)")
    limit_train_batches: int | float | None = key(_LIMIT, setup=True)
    limit_val_batches: int | float | None = key(_LIMIT, setup=True)
    limit_test_batches: int | float | None = key(_LIMIT, setup=True)
    num_sanity_val_steps: int = key("validation batches run before training", ge=-1)
    log_every_n_steps: int = key("training steps between logged metrics", ge=1)
    enable_checkpointing: bool | None = key("false: no checkpoint callbacks")
    enable_progress_bar: bool | None = key("false: no progress bar", setup=True)
    enable_model_summary: bool | None = key("false: no layer summary", setup=True)
    gradient_clip_val: int | float | None = key("clip gradients to this norm; null = none", ge=0)
    deterministic: bool | Literal["warn"] | None = key("deterministic algorithms only")
    benchmark: bool | None = key("cuDNN autotuning (true in trainer=gpu and trainer=ddp)")
    profiler: str | dict | None = key("simple | advanced | pytorch; conf's is a cheaper none")
    sync_batchnorm: bool = key("BatchNorm statistics over all DDP processes")


class Hardware(Section):
    """settings of the machine that are not Trainer arguments (cifarlab.run.trainer)"""

    float32_matmul_precision: Literal["highest", "high", "medium"] | None = key(
        "torch's float32 matmul precision: high = TF32 tensor cores; null = torch's"
    )
    keep_freed_host_memory: Literal["auto"] | bool = key(
        "glibc's malloc keeps freed blocks (faster CPU training); auto = on the CPU"
    )


# --- callbacks (conf/callbacks/default.yaml); null switches one off -----------------------------


class Callback(Built):
    """A callback whose other arguments its class checks."""

    model_config = ConfigDict(extra="allow")


class Checkpoint(Built):
    model_config = ConfigDict(extra="allow")  # lightning's ModelCheckpoint
    dirpath: str = key("the folder of the checkpoints")
    filename: str = key("the checkpoint's name, with {epoch} and {metric} fields")
    monitor: str | None = key("the metric that picks the best epoch; null = the last", default=None)
    save_top_k: int = key("how many checkpoints to keep", ge=-1)


class EarlyStopping(Built):
    enabled: bool = key("stop when the monitored metric stops improving")
    monitor: str = key("the metric watched")
    mode: Literal["max", "min"] = key("max for an accuracy, min for a loss")
    patience: int = key("validations without improvement before stopping", ge=1)
    min_delta: float = key("the smallest change that counts as an improvement", ge=0)


class Folder(Built):
    dirpath: str = key("where it writes")


class LearningRateMonitor(Built):
    model_config = ConfigDict(extra="allow")
    logging_interval: Literal["step", "epoch"] | None = key("log the lr every step or epoch")


class ErrorAnalysis(Built):
    output_dir: str = key("where it writes")
    num_hardest: int = key("the highest-loss test images shown and listed", ge=0)


class ClassFigures(Built):
    every_n_epochs: int = key("validation figures every N epochs (and at the last)", ge=1)


class ImageGrids(Built):
    num_images: int = key("images in each grid", ge=1)


class TrialPruning(Built):
    trial: Any = key("the search trial this job runs (set by the sweeper)")
    prune: Any = key("whether it reports to the pruner (set by the sweeper)")


class Callbacks(Section):
    model_config = ConfigDict(extra="allow")  # +callbacks.NAME._target_=... adds one
    model_checkpoint: Checkpoint | None = key("the best epoch's checkpoint", default=None)
    last_checkpoint: Checkpoint | None = key("last.ckpt, written every epoch", default=None)
    early_stopping: EarlyStopping | None = key("early stopping", default=None)
    curves: Folder | None = key("history.csv and curves.png", default=None)
    lr_monitor: LearningRateMonitor | None = key("the lr in the logs", default=None)
    progress_bar: Callback | None = key("the progress bar", setup=True, default=None)
    model_summary: Callback | None = key("the network's layers, parameters and FLOPs", default=None)
    error_analysis: ErrorAnalysis | None = key("the test's error analysis", default=None)
    class_figures: ClassFigures | None = key("TensorBoard's per-class figures", default=None)
    image_grids: ImageGrids | None = key("TensorBoard's image grids", default=None)
    hparams: Callback | None = key("TensorBoard's HParams tab", default=None)
    skip_idle_hooks: Callback | None = key("skips per-batch hooks no callback uses", default=None)
    trial_pruning: TrialPruning | None = key("hparams_search's pruning", default=None)


# --- logger= (conf/logger/): several with logger=[tensorboard,csv] ------------------------------


class TensorBoard(Built):
    model_config = ConfigDict(extra="allow")
    save_dir: str = key("the folder of its logs")
    name: str = key("its subfolder")
    default_hp_metric: bool = key("log Lightning's placeholder hp_metric")


class CSV(Built):
    model_config = ConfigDict(extra="allow")
    save_dir: str = key("the folder of its logs")
    name: str = key("its subfolder")


class MLflow(Built):
    model_config = ConfigDict(extra="allow")
    tracking_uri: str = key("the MLflow store, e.g. sqlite:///logs/mlflow.db")
    experiment_name: str = key("the MLflow experiment")
    run_name: str | None = key("null: the sweep's overrides in a multirun, MLflow's otherwise")


class WandB(Built):
    model_config = ConfigDict(extra="allow")
    save_dir: str = key("the folder of its files")
    project: str = key("the W&B project")
    name: str | None = key("null: the sweep's overrides in a multirun, W&B's otherwise")
    offline: bool = key("log to disk only, for wandb sync later")


class Loggers(Section):
    model_config = ConfigDict(extra="allow")
    tensorboard: TensorBoard | None = key("TensorBoard", default=None)
    csv: CSV | None = key("Lightning's CSVLogger", default=None)
    mlflow: MLflow | None = key("MLflow (uv sync --extra mlflow)", default=None)
    wandb: WandB | None = key("Weights & Biases (uv sync --extra wandb)", default=None)


class Paths(Section):
    data_dir: str = key("the data folder", setup=True, location=True)
    log_dir: str = key("where runs and sweeps get their folders", setup=True, location=True)
    output_dir: str = key("this run's folder", setup=True, location=True)


class Search(Section):
    trial: Any = key("the Optuna trial of this job (set by the sweeper)")
    prune: bool = key("whether this job reports to the pruner")
