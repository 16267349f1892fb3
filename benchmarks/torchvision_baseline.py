"""torchvision's per-image input path (``CIFAR10`` + transforms + ``DataLoader``) over given images,
the baseline bench_speed.py holds cifarlab's batches against."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar

import torch
from torchvision import transforms
from torchvision.datasets import CIFAR10

from cifarlab.data import NORMALIZATIONS


class LocalCIFAR10(CIFAR10):
    """torchvision's CIFAR10, minus the md5 checks that only the official archive passes."""

    meta: ClassVar[dict[str, str | None]] = {**CIFAR10.meta, "md5": None}

    def _check_integrity(self) -> bool:
        return True


def torchvision_cifar10(images: torch.Tensor, labels: torch.Tensor, folder: Path) -> CIFAR10:
    """torchvision's own CIFAR10 class over the same images, written in its on-disk format."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    flat = images.reshape(len(images), -1).numpy()
    for i, part in enumerate(torch.arange(len(images)).chunk(5), start=1):
        entry = {"data": flat[part.numpy()], "labels": labels[part].tolist()}
        (batches / f"data_batch_{i}").write_bytes(pickle.dumps(entry))
    (batches / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [str(i) for i in range(10)]})
    )
    mean, std = NORMALIZATIONS["cifar10"]
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    return LocalCIFAR10(str(folder), train=True, transform=transform)
