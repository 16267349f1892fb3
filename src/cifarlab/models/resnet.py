"""A CIFAR ResNet built from the reference material's residual block ("for later").

CIFAR images are 32x32, so the ImageNet stem (7x7 stride-2 conv and a max-pool) would throw away
most of the picture before the first block: the stem is one 3x3 stride-1 conv, and the four
stages (strides 1, 2, 2, 2) see 32, 16, 8 and 4 pixels. At ``width=64`` and depth 18 this is the
usual CIFAR ResNet-18 (11.17M parameters for 10 classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# blocks per stage for each supported depth (two 3x3 convs per block, plus stem and head)
DEPTHS: dict[int, tuple[int, int, int, int]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU.

    The shortcut is the identity, or a 1x1 conv + BN when the block changes the stride or the
    channel count, so that it can be added to the block's output. Convs carry no bias: the BN
    after each of them has its own.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem, four stages of residual blocks (channels width, 2w, 4w, 8w), average pool, linear.

    ``depth`` picks the blocks per stage (18: 2-2-2-2, 34: 3-4-6-3); ``width`` is the first
    stage's channels (64 = the usual ResNet-18/34).
    """

    def __init__(self, num_classes: int = 10, width: int = 64, depth: int = 18) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages: list[nn.Module] = []
        channels = width
        for i, blocks in enumerate(DEPTHS[depth]):
            out_channels = width * 2**i
            stride = 1 if i == 0 else 2
            for b in range(blocks):
                stages.append(ResidualBlock(channels, out_channels, stride if b == 0 else 1))
                channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
