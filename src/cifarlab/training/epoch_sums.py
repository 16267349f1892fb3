"""The training loss and accuracy of an epoch, summed on the device without a read per step."""

from __future__ import annotations

import torch


class EpochSums:
    """An epoch's training loss and correct predictions, over its images.

    A step only keeps references to its device tensors (the loss, the logits, the labels): no op
    at all, where two torchmetrics updates cost more than a small network's step and even a few
    tiny sums cost a kernel launch each on a GPU. The epoch's end adds them up in a few ops. What
    is kept is the size of the epoch's logits (45,000 x 10 floats for CIFAR-10), no more.
    A plain object, not a module: its tensors are no buffers, which a weight average (``ema``)
    would average too.
    """

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Adds a batch: its mean ``loss``, and its ``logits`` against ``labels`` (detached)."""
        self._losses.append(loss)
        self._logits.append(logits)
        self._labels.append(labels)

    def take(self) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """(loss sum, correct predictions) of the images added so far, on the device, and their
        number; None before the first batch. The next batches start new sums."""
        if not self._losses:
            return None
        labels = torch.cat(self._labels)
        correct = (torch.cat(self._logits).argmax(dim=1) == labels).sum()
        # each batch's mean loss once per image (expand is a view: one op in all)
        batches = zip(self._losses, self._labels, strict=True)
        loss_sum = torch.cat([loss.expand(len(y)) for loss, y in batches]).float().sum()
        self._losses, self._logits, self._labels = [], [], []
        return loss_sum, correct, labels.shape[0]
