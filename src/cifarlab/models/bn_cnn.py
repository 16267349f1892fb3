"""The reference material's small CNN, with BatchNorm (its last step) or without (its first)."""

from __future__ import annotations

import torch
from torch import nn


class BNCNN(nn.Module):
    """Two 3x3 conv blocks (ReLU then BatchNorm) halving channels, then a 32-unit head.

    ``batchnorm=False`` drops both BatchNorm layers: the reference's plain CNN, so its steps
    (CNN, then dropout, then L2, then BatchNorm) can each be run on their own.
    """

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 16,
        dropout: float = 0.0,
        batchnorm: bool = True,
        image_size: int = 32,
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
            nn.Linear((image_size // 4) ** 2 * half, 32),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
