"""Cutout, mixup and cutmix as whole-batch tensor ops on the batch's own device.

They run in ``ClassifierModule.training_step`` on the batch the data path delivers: already
cropped, flipped and normalized, so cutout's fill value 0 is each channel's mean. No per-image
Python runs: a batch costs a few masked or indexed tensor ops whatever its size.

Random draws come from a NumPy generator seeded by ``(seed, epoch, rank)`` at the start of each
epoch (NumPy because ``torch.distributions.Beta`` cannot take a generator). An epoch's draws are
thus the same however the run got there, fresh or resumed, on any device, like the data path's.
Mixup and cutmix draw one ``lam`` and one pairing per batch, as both papers' reference code does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MixedTargets:
    """A batch's labels after mixing: a share ``lam`` of ``y_a`` and ``1 - lam`` of ``y_b``."""

    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: float = 1.0

    def loss(
        self,
        logits: torch.Tensor,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """``lam * criterion(y_a) + (1 - lam) * criterion(y_b)``: the loss of the mixed label.

        ``criterion`` is any per-batch loss of ``(logits, labels)``, e.g. ``F.cross_entropy``
        with its ``label_smoothing`` set, which stays linear in the target so the sum is exact.
        """
        if self.lam == 1.0:
            return criterion(logits, self.y_a)
        return self.lam * criterion(logits, self.y_a) + (1.0 - self.lam) * criterion(
            logits, self.y_b
        )

    @property
    def dominant(self) -> torch.Tensor:
        """The label with the larger share, against which training accuracy is counted."""
        return self.y_a if self.lam >= 0.5 else self.y_b


def _draw(values: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(values).to(device)


def cutout(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Sets a ``size`` x ``size`` square of every image to 0, all channels.

    Each square is centred on a pixel drawn uniformly from the whole image and clipped at the
    border, as in DeVries & Taylor (2017), who found that letting it reach past the edge matters.
    """
    n, _, h, w = x.shape
    top = _draw(rng.integers(0, h, n), x.device)[:, None] - size // 2
    left = _draw(rng.integers(0, w, n), x.device)[:, None] - size // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + size)
    in_cols = (cols >= left) & (cols < left + size)
    # torch.where keeps a channels_last batch channels_last (masked_fill with a broadcast mask not)
    return torch.where(in_rows[:, None, :, None] & in_cols[:, None, None, :], 0.0, x)


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, MixedTargets]:
    """Blends the batch with a shuffled copy of itself: ``lam * x + (1 - lam) * x[perm]``,
    ``lam ~ Beta(alpha, alpha)`` (Zhang et al. 2018)."""
    lam = float(rng.beta(alpha, alpha))
    perm = _draw(rng.permutation(len(y)), x.device)
    return torch.lerp(x[perm], x, lam), MixedTargets(y, y[perm], lam)


def cutmix(
    x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, MixedTargets]:
    """Pastes one box of a shuffled copy of the batch into every image (Yun et al. 2019).

    The box's area is about ``1 - lam`` of the image, ``lam ~ Beta(alpha, alpha)``, centred
    anywhere and clipped at the border; ``lam`` is then set to the area actually kept.
    """
    _, _, h, w = x.shape
    cut = np.sqrt(1.0 - rng.beta(alpha, alpha))
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    half_h, half_w = int(h * cut) // 2, int(w * cut) // 2
    y1, y2 = max(cy - half_h, 0), min(cy + half_h, h)
    x1, x2 = max(cx - half_w, 0), min(cx + half_w, w)
    perm = _draw(rng.permutation(len(y)), x.device)
    mixed = x.clone()
    mixed[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
    return mixed, MixedTargets(y, y[perm], lam)


class BatchAugment:
    """Cutout, then mixup or cutmix, on each training batch; each off at 0.

    With both ``mixup_alpha`` and ``cutmix_alpha`` above 0, each batch gets one of the two,
    chosen with equal odds.
    """

    def __init__(
        self,
        cutout: int = 0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.cutout, self.seed = cutout, seed
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.reseed()

    @classmethod
    def from_config(cls, cfg: dict[str, object] | None, seed: int) -> BatchAugment:
        """Builds it from the ``batch_aug`` config node (none: every augmentation off)."""
        return cls(**(cfg or {}), seed=seed)  # type: ignore[arg-type]

    def reseed(self, *key: int) -> None:
        """Restarts the draws from ``(seed, *key)``, e.g. ``(epoch, rank)`` at an epoch's start."""
        self.rng = np.random.default_rng([self.seed, *key])

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, MixedTargets]:
        if self.cutout:
            x = cutout(x, self.cutout, self.rng)
        mixes = [
            (op, alpha)
            for op, alpha in ((mixup, self.mixup_alpha), (cutmix, self.cutmix_alpha))
            if alpha > 0
        ]
        if not mixes:
            return x, MixedTargets(y, y)
        op, alpha = mixes[int(self.rng.integers(2))] if len(mixes) == 2 else mixes[0]
        return op(x, y, alpha, self.rng)
