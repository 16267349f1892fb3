"""One split of a data set as tensors, whichever source it was read from."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageSet:
    """One split: images ``(N, 3, 32, 32)`` uint8, labels ``(N,)`` int64 indexing ``classes``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
