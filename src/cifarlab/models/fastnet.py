"""An airbench-class network: the fastest known way to 94% on CIFAR-10 is mostly this architecture.

Written from the published description of Keller Jordan's airbench94 (a frozen patch-whitening
first layer, three conv groups of widths 64/256/256 with max-pooling, a global max-pool and a
linear head with a scaled output). What makes it train in about ten epochs:

- the first layer is a 2x2 convolution whose filters whiten 2x2 image patches, computed once from
  training images (eigenvectors of the patch covariance) and never trained; its bias trains with a
  learning rate that falls linearly to 0 over the first ``whiten_bias_epochs`` epochs (see
  :meth:`FastNet.early_params`);
- convolutions start as identity maps (Dirac init) on their first input channels;
- BatchNorm has no trainable scale, a fast running-statistics momentum and a trainable bias that
  the recipe gives a much higher learning rate (``optimizer.norm_lr_mult``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WHITEN_PATCH = 2  # 2x2 patches of 3 channels: 12 eigenvectors, used with both signs = 24 filters


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm with its scale fixed at 1: only the bias (a learned threshold) is trained.

    ``momentum`` here is PyTorch's (weight of the new batch), so 0.4 keeps 60% of the old running
    statistics: fast enough that the statistics follow the weight averaging of the recipe.
    """

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    """conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU."""

    def __init__(self, channels_in: int, channels_out: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(channels_out, bn_momentum)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.norm2 = FrozenScaleBatchNorm(channels_out, bn_momentum)
        for conv in (self.conv1, self.conv2):
            dirac_init(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(self.pool(self.conv1(x))))
        return F.gelu(self.norm2(self.conv2(x)))


def dirac_init(conv: nn.Conv2d) -> None:
    """Default init, then the first ``in_channels`` filters pass their input channel through."""
    with torch.no_grad():
        n = min(conv.in_channels, conv.out_channels)
        nn.init.dirac_(conv.weight[:n])


def whitening_filters(images: torch.Tensor, eps: float = 5e-4) -> torch.Tensor:
    """2x2 filters that decorrelate and equalize the variance of 2x2 patches of ``images``.

    ``images`` are normalized float ``(n, 3, h, w)``. The patch covariance is a sum over patches, so
    the filters do not depend on the order of the images. Returns ``(24, 3, 2, 2)``: each scaled
    eigenvector and its negative (GELU after the layer would otherwise lose half of each).
    """
    patches = images.unfold(2, WHITEN_PATCH, 1).unfold(3, WHITEN_PATCH, 1)
    patches = patches.transpose(1, 3).reshape(-1, 3 * WHITEN_PATCH * WHITEN_PATCH).double()
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # largest first
    filters = eigenvectors.reshape(-1, 3, WHITEN_PATCH, WHITEN_PATCH)
    filters = filters / torch.sqrt(eigenvalues.view(-1, 1, 1, 1) + eps)
    return torch.cat([filters, -filters]).float()


class FastNet(nn.Module):
    """Whitening conv -> GELU -> three ConvGroups -> global max-pool -> linear head (scaled).

    ``width`` is the first group's channels (64 = airbench94); the other two groups have four
    times as many. Call :meth:`init_whitening` with training images before training: until then
    the whitening filters are zero and :attr:`whitened` is False.
    """

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 64,
        bn_momentum: float = 0.4,
        head_scale: float = 1 / 9,
        whiten_bias_epochs: int = 3,
    ) -> None:
        super().__init__()
        channels = 2 * 3 * WHITEN_PATCH * WHITEN_PATCH
        self.whiten = nn.Conv2d(3, channels, WHITEN_PATCH, bias=True)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.weight)
        self.register_buffer("whitened", torch.tensor(False))
        widths = (width, 4 * width, 4 * width)
        self.groups = nn.Sequential(
            ConvGroup(channels, widths[0], bn_momentum),
            ConvGroup(widths[0], widths[1], bn_momentum),
            ConvGroup(widths[1], widths[2], bn_momentum),
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.head_scale = head_scale
        self.whiten_bias_epochs = whiten_bias_epochs

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor) -> None:
        """Sets the frozen first layer from normalized training images (airbench uses 5,000)."""
        self.whiten.weight.copy_(whitening_filters(images.to(self.whiten.weight.device)))
        self.whitened.fill_(True)

    def early_params(self) -> tuple[list[nn.Parameter], int]:
        """The parameters that train only early on, and over how many epochs: the whitening bias.

        cifarlab.training.optimizers gives them a group of their own whose learning rate falls
        linearly to 0 over those epochs and then stays 0, as airbench94_muon schedules this bias.
        They keep ``requires_grad``: DDP registers the trainable parameters once, and a parameter
        that stopped producing gradients part-way through a run would break its gradient reduction.
        """
        return [self.whiten.bias], self.whiten_bias_epochs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        return self.head(x) * self.head_scale
