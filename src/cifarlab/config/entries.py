"""The whole config of each entry point (conf/train.yaml, eval.yaml, predict.yaml, export.yaml)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from cifarlab.config.learning import (
    EMA,
    BatchAug,
    Data,
    Loss,
    LrFind,
    Model,
    Optimizer,
    Scheduler,
    Source,
)
from cifarlab.config.running import Callbacks, Hardware, Loggers, Paths, Search, Trainer
from cifarlab.config.schema import Section, key

TTA = Literal["none", "flip", "flip_translate"]
_TTA = "test-time augmentation: none | flip | flip_translate (mirror + 1-pixel shifts)"


class Entry(Section):
    """A script's config; ``script`` names it in messages."""

    script: ClassVar[str]
    task_name: str = key("names the log folder: <paths.log_dir>/<task_name>/runs/<time>")


class TrainConfig(Entry):
    script = "train.py"
    seed: int = key("seeds torch, numpy and Python, and the batch augmentations")
    ckpt_path: str | None = key(
        "continue the run of this last.ckpt (with its own config)", setup=True
    )
    tune: Literal["lr_find"] | None = key("lr_find: the learning-rate finder instead of training")
    lr_find: LrFind = key("the lr finder's range and steps")
    optimized_metric: str = key("the metric train.py returns to a Hydra sweeper")
    divergence_check_every_n_steps: int = key("steps between reads of the loss check", ge=1)
    loss: Loss = key("the training loss")
    tta: TTA = key(_TTA)
    ema: EMA = key("the average of the weights that validation, test and checkpoints use")
    model: Model = key("the network: model=NAME picks conf/model/NAME.yaml")
    data: Data = key("the data and the batches")
    optimizer: Optimizer = key("optimizer=NAME picks conf/optimizer/NAME.yaml")
    scheduler: Scheduler = key("the lr schedule: scheduler=NAME picks conf/scheduler/NAME.yaml")
    batch_aug: BatchAug = key("cutout, mixup, cutmix of training batches (batch_aug=NAME)")
    trainer: Trainer = key("lightning.pytorch.Trainer (trainer=NAME picks a preset)")
    hardware: Hardware = key("settings of the machine outside the Trainer")
    callbacks: Callbacks = key("the callbacks; callbacks.NAME=null switches one off")
    logger: Loggers | None = key("logger=NAME or [NAME,NAME]; null = none", default=None)
    search: Search | None = key("set by hparams_search", default=None)
    paths: Paths = key("where things are")

    @model_validator(mode="after")
    def _finder_range(self) -> TrainConfig:
        if self.lr_find.min_lr >= self.lr_find.max_lr:
            raise ValueError(
                f"lr_find.min_lr={self.lr_find.min_lr} must be below lr_find.max_lr="
                f"{self.lr_find.max_lr}: the finder raises the lr from one to the other."
            )
        return self


class EvalData(Section):
    """null: as the checkpoint's run had it"""

    source: Source | None = key("the checkpoint's data, or cifar10 | cifar100 | folder")
    root: str | None = key("the data folder", setup=True, location=True)
    cache_dir: str | None = key("decoded-image cache", setup=True, location=True)
    classes: list[str] | None = key("the classes (the checkpoint's own)")
    eval_batch_size: int | None = key("images per test batch", ge=1)
    val_size: int | None = key("images held out for validation (calibrate=true)", ge=0)


class EvalConfig(Entry):
    script = "eval.py"
    seed: int = key("seeds torch, numpy and Python")
    ckpt_path: str | None = key("the checkpoint to test (required)")
    tta: TTA | None = key(f"{_TTA}; null = as the run had it")
    calibrate: bool = key("fit a temperature on the validation split, saved beside the ckpt")
    data: EvalData = key("overrides of the checkpoint's data settings")
    trainer: Trainer = key("lightning.pytorch.Trainer (trainer=NAME picks a preset)")
    hardware: Hardware = key("settings of the machine outside the Trainer")
    paths: Paths = key("where things are")


class PredictConfig(Entry):
    script = "predict.py"
    ckpt_path: str | None = key("a checkpoint written by train.py (required)")
    input: str | list[str] | None = key("an image, a folder, a quoted glob or a list (required)")
    device: str = key("auto = CUDA, then MPS, then the CPU; or cpu, cuda, cuda:1, mps")
    batch_size: int = key("images per batch", ge=1)
    top_k: int = key("classes listed per file", ge=1)
    show: int = key("rows printed on the console (all are in predictions.csv)", ge=0)
    paths: Paths = key("where things are")


class ExportConfig(Entry):
    script = "export.py"
    ckpt_path: str | None = key("a checkpoint written by train.py (required)")
    format: Literal["state_dict", "torchscript", "onnx"] = key(".pth | .pt | .onnx")
    output: str | None = key("the file to write; null = beside the checkpoint, named after it")
    overwrite: bool = key("replace an existing export and its sidecar")
    paths: Paths = key("where things are")


ENTRIES: dict[str, type[Entry]] = {
    "train": TrainConfig,
    "eval": EvalConfig,
    "predict": PredictConfig,
    "export": ExportConfig,
}
