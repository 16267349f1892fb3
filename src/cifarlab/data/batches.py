"""Batches of normalized images sliced from one uint8 tensor per split, on the model's device.

Per-image Python (PIL transforms in a DataLoader) costs more than a small model's forward pass on a
CPU. Here a batch is an index slice of the split's ``(N, 3, 32, 32)`` uint8 tensor, augmented and
normalized as one tensor operation, on whatever device the model lives on. An epoch's random draws
(order, crops, flips) are made at once on the host and reach the device in one copy that does not
wait for it, so a training step never synchronizes with the host.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch

from cifarlab.data.augment import (
    NO_AUGMENT,
    Augment,
    crop_each,
    mirror_where,
    pad_images,
    window_starts,
)
from cifarlab.data.normalization import FusedNormalize


def _generator(*key: object) -> torch.Generator:
    """A CPU generator for ``key`` (e.g. seed, epoch, rank, purpose): a separate stream for every
    key, the same on every machine and device."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def shard_size(
    n: int, batch_size: int, rank: int, world_size: int, shuffle: bool, drop_last: bool
) -> int:
    """Images one rank gets per epoch. Shuffled shards are cut to equal sizes (DDP ranks step
    together); ``drop_last`` drops a last partial batch when there is a full one, so every step
    has the same shape (``model.compile`` would otherwise recompile for the last batch)."""
    per_rank = n // world_size if shuffle else len(range(rank, n, world_size))
    if drop_last and per_rank >= batch_size:
        per_rank -= per_rank % batch_size
    return per_rank


def epoch_draws(
    n: int,
    augment: Augment,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    drop_last: bool = False,
) -> torch.Tensor:
    """One rank's images of one epoch and their crop and flip, as a ``(4, m)`` int64 tensor with
    rows (image index, crop row offset, crop column offset, flipped), drawn on the host at once.

    The order depends on ``(seed, epoch)`` alone, so the ranks' shards are disjoint slices of one
    permutation; crops and random flips on ``(seed, epoch, rank)``, so ranks augment differently
    and a resumed epoch repeats exactly. Alternating flips start from one random flip per image,
    drawn from ``seed`` alone because the shared order moves an image between ranks.
    """
    if shuffle:
        order = torch.randperm(n, generator=_generator(seed, epoch, "order"))
        order = order[: n - n % world_size][rank::world_size]
    else:
        order = torch.arange(rank, n, world_size)
    order = order[: shard_size(n, batch_size, rank, world_size, shuffle, drop_last)]
    g = _generator(seed, epoch, rank, "augment")
    draws = torch.zeros(4, len(order), dtype=torch.int64)
    draws[0] = order
    if augment.crop:
        draws[1:3] = torch.randint(0, augment.offsets, (2, len(order)), generator=g)
    if augment.flip and augment.flip_mode == "alternate":
        first = torch.rand(n, generator=_generator(seed, "alternate flips")) < 0.5
        draws[3] = first[order] ^ bool(epoch % 2)
    elif augment.flip:
        draws[3] = torch.rand(len(order), generator=g) < 0.5
    return draws


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device`` without making the host wait. To a CUDA device a copy from pageable
    memory waits for the stream (torch's ``memcpy_and_sync``, which
    ``torch.cuda.set_sync_debug_mode`` reports); from pinned memory with ``non_blocking`` it is
    queued on the stream (``cudaMemcpyAsync``), and torch keeps the pinned block until it ran."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class TensorBatches:
    """Batches of ``(normalized float images, labels)`` sliced from tensors on the model's device.

    Each epoch's order, crops and flips come from ``epoch_draws`` in one host-to-device copy; a
    step then only indexes, flips and normalizes on the device. Images stay uint8 until a batch is
    gathered (a quarter of the memory of normalized floats); normalizing the gathered pixels gives
    the same bits as normalizing the split first. ``gather`` picks how crops are cut: ``split``
    pads the whole split once (one gather per batch), ``batch`` pads and crops each batch (never
    holds more than a batch; MPS may copy the split path's view whole), ``auto`` is ``batch`` on
    MPS and ``split`` elsewhere.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        shuffle: bool = False,
        augment: Augment = NO_AUGMENT,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        gather: str = "auto",
        channels_last: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.augment = augment
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        if gather == "auto":
            gather = "batch" if images.device.type == "mps" else "split"
        self.gather = gather
        self.channels_last = channels_last
        self._windows: torch.Tensor | None = None
        self.normalize = FusedNormalize(mean, std, images.device)

    def windows(self) -> torch.Tensor:
        """``window_starts`` of the split, padded once (uint8: 216 MB for 45,000 images with
        padding 4)."""
        if self._windows is None:
            padded = pad_images(self.images, self.augment.padding, self.augment.pad_mode)
            self._windows = window_starts(padded, self.images.shape[-1])
        return self._windows

    def batch(
        self, idx: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flipped: torch.Tensor
    ) -> torch.Tensor:
        """Images ``idx`` cropped at ``(dy, dx)`` of their padded self, mirrored where
        ``flipped``, normalized: the same bits on either gather path."""
        _, channels, size, _ = self.images.shape
        padded_size = size + 2 * self.augment.padding
        if not self.augment.crop:
            x = self.images.index_select(0, idx)
        elif self.gather == "split":
            start = (idx * channels * padded_size + dy) * padded_size + dx  # see window_starts
            x = self.windows().index_select(0, start)
        else:
            padded = self.images.index_select(0, idx)
            padded = pad_images(padded, self.augment.padding, self.augment.pad_mode)
            x = crop_each(padded, dy, dx, size)
        if self.augment.flip:
            x = mirror_where(x, flipped)
        x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __len__(self) -> int:
        n = shard_size(
            len(self.labels),
            self.batch_size,
            self.rank,
            self.world_size,
            self.shuffle,
            self.drop_last,
        )
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        draws = epoch_draws(
            len(self.labels),
            self.augment,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch(),
            rank=self.rank,
            world_size=self.world_size,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
        )
        order, dy, dx, flipped = to_device(draws, self.images.device)
        for start in range(0, len(order), self.batch_size):
            part = slice(start, start + self.batch_size)
            idx = order[part]
            yield self.batch(idx, dy[part], dx[part], flipped[part]), self.labels[idx]
