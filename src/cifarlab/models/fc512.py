"""FC-512: the reference material's fully connected baseline (no convolutions at all)."""

from __future__ import annotations

import torch
from torch import nn


class FC512(nn.Module):
    """One hidden tanh layer over the flattened image: the reference's fully connected baseline."""

    def __init__(self, num_classes: int = 10, width: int = 512, image_size: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(3 * image_size * image_size, width),
            nn.Tanh(),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
