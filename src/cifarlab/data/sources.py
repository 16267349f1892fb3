"""Which source a run reads (``data.source``): its class names and a split decoded into tensors.

Nothing here caches: ``cifarlab.data.cache`` decides when a source has to be read again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cifarlab.data.cifar import (
    CIFAR10_CLASSES,
    LABEL_TYPES,
    read_cifar10,
    read_cifar100,
)
from cifarlab.data.folders import folder_classes, read_folder
from cifarlab.data.image_set import ImageSet


def source_classes(source: str, root: Path, label_type: str = "fine") -> list[str]:
    """Class names of a source, in label order, without reading any image."""
    if source == "cifar10":
        return list(CIFAR10_CLASSES)
    if source == "cifar100":
        return list(LABEL_TYPES[label_type])
    return folder_classes(root)


def read_source(
    source: str,
    root: Path,
    split: str,
    classes: Sequence[str],
    *,
    label_type: str = "fine",
    image_size: int = 32,
) -> ImageSet:
    """A split decoded from its files (``classes`` as ``source_classes`` gives them)."""
    if source == "cifar10":
        return read_cifar10(root, split)
    if source == "cifar100":
        return read_cifar100(root, split, label_type)
    return read_folder(root, split, classes, image_size)
