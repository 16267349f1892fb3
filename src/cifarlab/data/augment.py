"""On-device augmentation of whole uint8 batches: what a training batch goes through (``Augment``)
and the tensor operations that pad, crop and mirror it, each one gather rather than a loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

AUGMENTATIONS = {
    "none": (False, False),
    "flip": (False, True),
    "crop": (True, False),
    "crop_flip": (True, True),
}


@dataclass(frozen=True)
class Augment:
    """What a training batch goes through (``data.augment`` and the keys beside it).

    ``flip_mode="alternate"`` (as in airbench) flips a random half of the images in epoch 0 and
    then every image the other way each epoch, so each is seen both ways within two epochs.
    """

    crop: bool = False
    flip: bool = False
    padding: int = 4
    pad_mode: str = "zeros"
    flip_mode: str = "random"

    @property
    def offsets(self) -> int:
        """Crop positions per axis: ``2 * padding + 1`` when cropping, else the image itself."""
        return 2 * self.padding + 1 if self.crop else 1


NO_AUGMENT = Augment()  # evaluation batches: the images as they are


def parse_augment(augment: bool | str | None) -> str:
    """The key of ``AUGMENTATIONS`` that a ``data.augment`` value means (true, false or a key)."""
    if augment is True:
        return "crop_flip"
    if augment is False or augment is None:
        return "none"
    return augment


def pad_images(images: torch.Tensor, pad: int, mode: str = "zeros") -> torch.Tensor:
    """``images`` ``(n, c, h, w)`` with ``pad`` pixels more on each side, same dtype and device.

    ``reflect`` mirrors at the edge without repeating it, as ``F.pad(mode="reflect")`` does; it is
    one index gather here because torch's reflection kernels do not take uint8 on every device.
    """
    if pad == 0:
        return images
    if mode == "zeros":
        return F.pad(images, (pad, pad, pad, pad))
    h, w = images.shape[-2:]
    rows, cols = (_reflected(size, pad, images.device) for size in (h, w))
    return images[:, :, rows[:, None], cols]


def _reflected(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source index of each position of a reflect-padded axis: -2 -> 2, size + 1 -> size - 3."""
    index = torch.arange(-pad, size + pad, device=device).abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def crop_each(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size``-square crop of each padded image at its own offset, by two gathers: nothing
    larger than the batch is made (the ``split`` path's overlapping view may be copied whole on
    MPS)."""
    n, c, _, width = padded.shape
    span = torch.arange(size, device=padded.device)
    rows = (dy[:, None] + span)[:, None, :, None].expand(n, c, size, width)
    x = padded.gather(2, rows)
    cols = (dx[:, None] + span)[:, None, None, :].expand(n, c, size, size)
    return x.gather(3, cols)


def window_starts(padded: torch.Tensor, size: int) -> torch.Tensor:
    """Every ``size``-square window of every padded image as one ``(positions, c, size, size)``
    view: the window whose first pixel is element ``o`` of the split is row ``o``, so image
    ``i``'s crop at ``(dy, dx)`` is row ``i * c * H * W + dy * W + dx``. One ``index_select`` of
    whole rows is several times faster on a CPU than advanced indexing by ``(i, dy, dx)``."""
    padded = padded.contiguous()
    n, c, height, width = padded.shape
    last = (n - 1) * c * height * width + (height - size) * width + (width - size)
    return padded.as_strided((last + 1, c, size, size), (1, height * width, width, 1))


def mirror_where(x: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """``x`` with the images where ``flipped`` is 1 mirrored left to right: both versions side by
    side, then one ``index_select`` (``torch.where`` with a per-image mask is much slower on a
    CPU)."""
    n = len(x)
    both = torch.cat([x, x.flip(-1)])
    return both.index_select(0, torch.arange(n, device=x.device) + flipped * n)
