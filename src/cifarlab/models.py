"""The networks by config name. Each returns logits and takes a ``width``.

The first three are the reference material's; ``resnet`` (cifarlab.resnet) is built from its
residual block.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

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
    if name not in MODELS:
        raise CifarlabError(
            f"model={name!r} is not known; choose one of {', '.join(MODELS)} (e.g. model=lenet)."
        )
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise CifarlabError(f"model.width={width!r} must be a positive whole number.")
    if name == "bn_cnn" and (width < 2 or width % 2):
        raise CifarlabError(
            f"model.width={width} does not fit bn_cnn: its second conv has width/2 channels, so "
            "the width must be even and at least 2 (e.g. 16, 32, 64)."
        )
    dropout = options.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise CifarlabError(f"model.dropout={dropout!r} must be a number in [0, 1).")
    if not isinstance(options.get("batchnorm", True), bool):
        raise CifarlabError(f"model.batchnorm={options['batchnorm']!r} must be true or false.")
    try:
        return MODELS[name](num_classes=num_classes, width=width, **options)
    except TypeError as err:
        raise CifarlabError(f"model={name} does not take these options: {err}.") from None
