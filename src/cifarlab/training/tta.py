"""Test-time augmentation (``tta``): logits averaged over mirrored and shifted views of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tta_logits(net: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Logits averaged over views of ``x``: ``flip`` = the image and its mirror; ``flip_translate``
    (airbench's level 2) = half that, plus a quarter each for the image shifted one pixel up-left
    and one pixel down-right (reflect padding), each with its mirror."""

    def mirrored(images: torch.Tensor) -> torch.Tensor:
        return 0.5 * (net(images) + net(images.flip(-1)))

    logits = mirrored(x)
    if mode == "flip_translate":
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :h, :w], padded[..., 2 : h + 2, 2 : w + 2]]
        logits = 0.5 * logits + 0.25 * (mirrored(shifted[0]) + mirrored(shifted[1]))
    return logits
