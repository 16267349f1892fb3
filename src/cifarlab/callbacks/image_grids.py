"""Image grids in TensorBoard: what the model sees in training, and what it predicts at test.

A Lightning callback listed in conf/callbacks/default.yaml (``callbacks.image_grids=null`` switches
it off); it draws only into the run's TensorBoardLogger, on global rank 0.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from cifarlab.callbacks.tensorboard import run_tensorboard
from cifarlab.data.normalization import to_pictures
from cifarlab.review.figures import image_grid_figure


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
        if batch_idx != 0 or trainer.global_step != 0 or run_tensorboard(trainer) is None:
            return
        # copies on the device (a slice would keep the whole batch's memory for the epoch)
        self._first_batch = (
            batch[0][: self.num_images].clone(),
            batch[1][: self.num_images].clone(),
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = run_tensorboard(trainer)
        if logger is None or self._first_batch is None:
            return
        images, labels = self._first_batch
        self._first_batch = None
        shown = to_pictures(images, pl_module.hparams.data.get("normalize", "cifar10")).cpu()
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
        logger = run_tensorboard(trainer)
        if logger is None or not self._picked:
            return
        images, labels, predictions = (
            torch.cat(parts) for parts in zip(*self._picked, strict=True)
        )
        self._picked = []
        shown = to_pictures(images, pl_module.hparams.data.get("normalize", "cifar10")).cpu()
        fig = image_grid_figure(shown, pl_module.class_names, labels.cpu(), predictions.cpu())
        logger.experiment.add_figure("test/predictions", fig, trainer.global_step)
