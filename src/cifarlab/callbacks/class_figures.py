"""Confusion matrix and per-class accuracy figures in TensorBoard, for validation and test.

A Lightning callback listed in conf/callbacks/default.yaml (``callbacks.class_figures=null``
switches it off). It writes only through the run's TensorBoardLogger, on global rank 0, after the
counts are reduced, and does nothing without one. The figures are cifarlab.review.figures', the same
functions the run report draws with.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from cifarlab.callbacks.tensorboard import run_tensorboard
from cifarlab.review.analysis import MANY_CLASSES, most_confused_block
from cifarlab.review.figures import confusion_figure, per_class_accuracy, per_class_figure


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
        logger = run_tensorboard(trainer)
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
        logger = run_tensorboard(trainer)
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

    on_test_batch_end = on_validation_batch_end  # the same counting, in the test loop

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")
