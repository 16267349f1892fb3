"""The networks by config name. Each returns logits and takes a ``width``.

The first three are the reference material's; ``resnet`` (cifarlab.resnet) is built from its
residual block.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cifarlab.checks import check_model
from cifarlab.errors import CifarlabError
from cifarlab.fastnet import FastNet
from cifarlab.resnet import ResNet


class LeNet(nn.Module):
    """The PyTorch tutorial's net; ``width`` is the first conv's channels (the 'wider' exercise)."""

    def __init__(self, num_classes: int = 10, width: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FC512(nn.Module):
    """One hidden tanh layer over the flattened image: the reference's fully connected baseline."""

    def __init__(self, num_classes: int = 10, width: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * 32 * 32, width), nn.Tanh(), nn.Linear(width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BNCNN(nn.Module):
    """Two 3x3 conv blocks (ReLU then BatchNorm) halving channels, then a 32-unit head.

    ``batchnorm=False`` drops both BatchNorm layers: the reference's plain CNN, so its steps
    (CNN, then dropout, then L2, then BatchNorm) can each be run on their own.
    """

    def __init__(
        self, num_classes: int = 10, width: int = 16, dropout: float = 0.0, batchnorm: bool = True
    ) -> None:
        super().__init__()
        half = width // 2

        def norm(channels: int) -> list[nn.Module]:
            return [nn.BatchNorm2d(channels)] if batchnorm else []

        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            *norm(width),
            nn.MaxPool2d(2),
            nn.Conv2d(width, half, 3, padding=1),
            nn.ReLU(),
            *norm(half),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(8 * 8 * half, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet": LeNet,
    "fc512": FC512,
    "bn_cnn": BNCNN,
    "fastnet": FastNet,
    "resnet": ResNet,
}


def build_model(name: str, num_classes: int, width: int, **options: object) -> nn.Module:
    """Builds a model by its config name, refusing widths the architecture cannot take."""
    check_model({"name": name, "width": width, **options})
    try:
        return MODELS[name](num_classes=num_classes, width=width, **options)
    except TypeError as err:
        raise CifarlabError(f"model={name} does not take these options: {err}.") from None
