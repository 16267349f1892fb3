"""The per-channel normalization between a picture's uint8 pixels and the network's inputs.

Every path in and out of the network goes through here: the training and evaluation batches
(``FusedNormalize``), the images fastnet's whitening is computed from and predict.py's pictures
(``normalize``), and the images the figures show (``to_pictures``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# per-channel (mean, std) of [0, 1] pixels, by the name data.normalize gives
NORMALIZATIONS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def channel_stats(
    mean: Sequence[float], std: Sequence[float], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as float32 ``(1, 3, 1, 1)`` tensors on ``device``, to broadcast over
    an ``(N, 3, H, W)`` batch."""
    return tuple(  # type: ignore[return-value]
        torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1) for v in (mean, std)
    )


def normalize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 pixels ``(N, 3, H, W)`` -> ``(pixels / 255 - mean) / std``, computed in that order."""
    mean_t, std_t = channel_stats(mean, std, pixels.device)
    return (pixels.float() / 255.0 - mean_t) / std_t


class FusedNormalize:
    """``normalize`` as one fused multiply-add, ``pixels * (1 / (255 * std)) - mean / std``, for
    the batches of every step: it reads the uint8 pixels as floats itself, a pass less than
    ``pixels.float()`` first. The factors are made once; the result may differ from
    ``normalize``'s in the last bit."""

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], device: torch.device | str | None
    ) -> None:
        mean_t, std_t = channel_stats(mean, std, device)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, pixels, self.scale)


def to_pictures(inputs: torch.Tensor, name: str) -> torch.Tensor:
    """Normalized ``(N, 3, H, W)`` inputs -> ``[0, 1]`` images ``(N, H, W, 3)``, as people look at
    them (on the inputs' device)."""
    mean_t, std_t = channel_stats(*NORMALIZATIONS[name], device=inputs.device)
    return (inputs.float() * std_t + mean_t).clamp(0, 1).permute(0, 2, 3, 1)
