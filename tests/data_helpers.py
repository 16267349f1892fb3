"""Helpers shared by the data tests (tests/test_data_*.py, tests/test_data_datamodule.py)."""

from pathlib import Path

import torch

from cifarlab.data import CIFAR10DataModule, TensorBatches


def datamodule(root: Path, **kwargs) -> CIFAR10DataModule:
    kwargs = {"source": "folder", "root": str(root), "val_size": 24, "batch_size": 16, **kwargs}
    dm = CIFAR10DataModule(**kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def crops_of(images: torch.Tensor, pad: int = 4, mode: str = "zeros") -> torch.Tensor:
    """Every crop of every padded image, ``(n, c, dy, dx, h, w)``, built independently of
    TensorBatches (torch's own padding, then unfold)."""
    torch_mode = "constant" if mode == "zeros" else mode
    padded = torch.nn.functional.pad(images.float(), (pad,) * 4, mode=torch_mode)
    return padded.unfold(2, 32, 1).unfold(3, 32, 1)


def uint8_batches(images: torch.Tensor, **kwargs) -> TensorBatches:
    """Batches whose normalization is the identity, so pixels can be compared with the images."""
    return TensorBatches(images, torch.arange(len(images)), 16, [0.0] * 3, [1 / 255] * 3, **kwargs)
