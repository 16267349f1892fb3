"""What a run shows in TensorBoard beyond Lightning's scalars (figures, image grids, hparams),
and early stopping with the reason a run stopped.

Each piece is a Lightning callback listed in conf/callbacks/default.yaml, so a run can switch one
off (``callbacks.image_grids=null``). They write only through the run's TensorBoardLogger and do
nothing without one. Everything is written by global rank 0, after metrics are reduced. The
figures are cifarlab.figures', the same functions the run report draws with.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassConfusionMatrix

from cifarlab.analysis import MANY_CLASSES, most_confused_block
from cifarlab.data import NORMALIZATIONS
from cifarlab.figures import (
    confusion_figure,
    image_grid_figure,
    per_class_accuracy,
    per_class_figure,
)
from cifarlab.hparams_tab import hparams_summaries
from cifarlab.sweep import job_name, swept_keys
from cifarlab.utils import in_multirun


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


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    if not trainer.is_global_zero:
        return None
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def _unnormalize(images: torch.Tensor, normalize: str) -> torch.Tensor:
    """Normalized float batch -> [0, 1] images in (N, H, W, 3) order, as people look at them."""
    mean, std = (
        torch.tensor(v, device=images.device).view(1, 3, 1, 1) for v in NORMALIZATIONS[normalize]
    )
    return (images.float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu()


class ClassFigures(L.Callback):
    """Confusion matrix and per-class accuracy figures for validation and test.

    Validation figures are drawn every ``every_n_epochs`` epochs and at the last one, test figures
    once. It also writes TensorBoard's custom-scalars layout that puts all per-class curves of a
    split in one chart (Custom Scalars tab), next to train/val loss and accuracy overlaid.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = max(1, int(every_n_epochs))
        self._matrix: MulticlassConfusionMatrix | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = _tensorboard(trainer)
        if logger is None:
            return
        logger.experiment.add_custom_scalars(
            {
                "accuracy and loss": {
                    "accuracy (train, val)": ["Multiline", [r"^(train|val)/acc$"]],
                    "loss (train, val)": ["Multiline", [r"^(train|val)/loss$"]],
                },
                "per-class accuracy (one line per class)": {
                    "val": ["Multiline", [r"^val/acc_class/"]],
                    "test": ["Multiline", [r"^test/acc_class/"]],
                },
            }
        )

    def _reset(self, pl_module: L.LightningModule) -> None:
        # no input validation: it would read values back from the device at every batch
        matrix = MulticlassConfusionMatrix(len(pl_module.class_names), validate_args=False)
        self._matrix = matrix.to(pl_module.device)

    def _update(self, logits: Any, batch: Any) -> None:
        if isinstance(logits, torch.Tensor) and self._matrix is not None:
            self._matrix.update(logits, batch[1])

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._matrix is None:
            return
        # compute() sums the counts of every DDP process (torchmetrics syncs its "sum" state),
        # so every rank must get here; only rank 0 draws
        matrix = self._matrix.compute().cpu()
        self._matrix = None
        logger = _tensorboard(trainer)
        if logger is None:
            return
        names = pl_module.class_names
        when = f"epoch {trainer.current_epoch}" if stage == "val" else "best checkpoint"
        per_class = per_class_accuracy(matrix, names)
        if len(names) > MANY_CLASSES:  # unreadable in full: the most confused classes
            matrix, names = most_confused_block(matrix, names, MANY_CLASSES)
            per_class = {name: per_class[name] for name in names}
            when += f", the {len(names)} most confused classes"
        writer, step = logger.experiment, trainer.global_step
        writer.add_figure(
            f"{stage}/confusion_matrix", confusion_figure(matrix, names, f"{stage} ({when})"), step
        )
        writer.add_figure(
            f"{stage}/per_class_accuracy",
            per_class_figure(per_class, f"{stage} accuracy per class ({when})"),
            step,
        )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        drawn = (epoch + 1) % self.every_n_epochs == 0 or last
        if drawn and not trainer.sanity_checking:
            self._reset(pl_module)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self._update(outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(pl_module)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self._update(outputs, batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")


class ImageGrids(L.Callback):
    """Training images as the model sees them (augmented, then un-normalized) with their labels,
    from the first training batch, and test images of every class with ground truth and
    prediction (about ``num_images`` in all), logged at the end of testing.

    The first batch's images stay on the device until the first epoch ends: copying them to the
    host at once would make the first step wait for the GPU, while the epoch's end reads from
    the device anyway.
    """

    def __init__(self, num_images: int = 32) -> None:
        self.num_images = num_images
        self._first_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._picked: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._counts: list[int] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx != 0 or trainer.global_step != 0 or _tensorboard(trainer) is None:
            return
        # copies on the device (a slice would keep the whole batch's memory for the epoch)
        self._first_batch = (
            batch[0][: self.num_images].clone(),
            batch[1][: self.num_images].clone(),
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = _tensorboard(trainer)
        if logger is None or self._first_batch is None:
            return
        images, labels = self._first_batch
        self._first_batch = None
        shown = _unnormalize(images, pl_module.hparams.data.get("normalize", "cifar10"))
        fig = image_grid_figure(shown, pl_module.class_names, labels.cpu())
        logger.experiment.add_figure("train/samples", fig, 0)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._picked = []
        self._counts = [0] * len(pl_module.class_names)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keeps the first few test images of every class (test sets are often sorted by class,
        so the first batch alone would show one class only)."""
        if not isinstance(outputs, torch.Tensor) or not trainer.is_global_zero:
            return
        per_class = -(-self.num_images // len(self._counts))
        labels = batch[1]
        for label in labels.unique().tolist():
            wanted = per_class - self._counts[label]
            if len(self._counts) > self.num_images:  # CIFAR-100: one image of the first classes
                wanted = min(wanted, self.num_images - sum(self._counts))
            if wanted <= 0:
                continue
            idx = (labels == label).nonzero().flatten()[:wanted]
            self._picked.append((batch[0][idx], labels[idx], outputs[idx].argmax(dim=1)))
            self._counts[label] += len(idx)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = _tensorboard(trainer)
        if logger is None or not self._picked:
            return
        images, labels, predictions = (
            torch.cat(parts) for parts in zip(*self._picked, strict=True)
        )
        self._picked = []
        shown = _unnormalize(images, pl_module.hparams.data.get("normalize", "cifar10"))
        fig = image_grid_figure(shown, pl_module.class_names, labels.cpu(), predictions.cpu())
        logger.experiment.add_figure("test/predictions", fig, trainer.global_step)


class HParamsLogger(L.Callback):
    """Writes the run's hyperparameters to TensorBoard's HParams tab, against its final metrics
    (cifarlab.hparams_tab says which columns and why). In a multirun the columns the sweep varies
    are marked as differing."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = _tensorboard(trainer)
        if logger is None:
            return
        swept = swept_keys() if in_multirun() else set()
        summaries = hparams_summaries(dict(pl_module.hparams), trainer.max_epochs, swept)
        # SummaryWriter.file_writer is public (torch's own add_hparams writes through it) and
        # open from the writer's creation until Lightning's finalize closes it after fit
        for summary in summaries:
            logger.experiment.file_writer.add_summary(summary)


def early_stopping(
    enabled: bool = False,
    monitor: str = "val/acc",
    mode: str = "max",
    patience: int = 5,
    min_delta: float = 0.0,
) -> EarlyStopping | None:
    """Lightning's EarlyStopping when ``callbacks.early_stopping.enabled=true``, else nothing.

    It is checked after every validation: when ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` validations in a row, training stops (and the best checkpoint
    is tested as usual). ``stop_reason`` puts why a run stopped into metrics.json.
    """
    if not enabled:
        return None
    return EarlyStopping(monitor=monitor, mode=mode, patience=patience, min_delta=min_delta)


def stop_reason(trainer: L.Trainer) -> str:
    """Why fit ended, in words: early stopping (and on what), or the epoch/step/time limit."""
    stopper = trainer.early_stopping_callback
    if stopper is not None and stopper.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
        epoch = stopper.stopped_epoch + 1
        if stopper.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED:
            return (
                f"early stopping after epoch {epoch}: {stopper.monitor} did not improve by more "
                f"than {stopper.min_delta:g} for {stopper.patience} epoch(s) "
                f"(best {float(stopper.best_score):.4f})"
            )
        return f"early stopping after epoch {epoch}: {stopper.stopping_reason_message}"
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return f"max_epochs={trainer.max_epochs} reached"
    return "a trainer limit was reached (max_steps or max_time)"
