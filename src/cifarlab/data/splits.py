"""Which images of a source a run trains, validates and tests on.

The validation split is carved from the whole training set by ``split_seed`` before the classes are
chosen, so the same images are held out in every run and for every subset of classes; each split
is then served in an order that mixes its classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cifarlab.data.image_set import ImageSet
from cifarlab.errors import CifarlabError


def class_mixed_order(labels: torch.Tensor) -> torch.Tensor:
    """A fixed order that spreads every class evenly over the split (round robin when classes are
    equally large), keeping each class's own order.

    A folder is read class by class; served that way, the first batches of a split (all that
    ``trainer.limit_val_batches`` scores) would hold one or two classes. Here every stretch of the
    split holds each class in its share, to within one image.
    """
    counts = torch.bincount(labels)
    by_class = torch.argsort(labels, stable=True)
    first_of_class = torch.cumsum(counts, 0) - counts
    place = torch.empty_like(labels)  # each image's position within its class
    place[by_class] = torch.arange(len(labels)) - first_of_class[labels[by_class]]
    share = (place.double() + 0.5) / counts[labels].double()
    return torch.from_numpy(np.lexsort((labels.numpy(), share.numpy())))


def subset(data: ImageSet, keep: torch.Tensor, names: Sequence[str]) -> ImageSet:
    """Images ``keep`` of the classes ``names``, relabelled in that order, in
    ``class_mixed_order``."""
    remap = torch.full((len(data.classes),), -1, dtype=torch.int64)
    for new, name in enumerate(names):
        remap[data.classes.index(name)] = new
    labels = remap[data.labels[keep]]
    keep, labels = keep[labels >= 0], labels[labels >= 0]
    mixed = class_mixed_order(labels)
    return ImageSet(data.images[keep[mixed]], labels[mixed], list(names))


def hold_out(train: ImageSet, val_size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices of ``train`` that stay for training and the ``val_size`` held out for
    validation, drawn by ``split_seed`` (each sorted)."""
    if val_size >= len(train.labels):
        raise CifarlabError(
            f"data.val_size={val_size} leaves no training images: the training set has "
            f"{len(train.labels)} images. Choose data.val_size below that (default 5000)."
        )
    order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(split_seed))
    n_train = len(order) - val_size
    return order[:n_train].sort().values, order[n_train:].sort().values
