"""LeNet: the PyTorch CIFAR-10 tutorial's net, the first of the reference material's three."""

from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    """The PyTorch tutorial's net; ``width`` is the first conv's channels (the 'wider' exercise)."""

    def __init__(self, num_classes: int = 10, width: int = 6, image_size: int = 32) -> None:
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2  # after conv 5, pool 2, conv 5, pool 2: 5 at 32
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
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
