"""cifarlab.data.batches: TensorBatches, an epoch's draws per rank, normalization per batch."""

import pytest
import torch

import cifarlab.data.batches as tensor_batches
from cifarlab.data import NORMALIZATIONS, Augment, TensorBatches

from .data_helpers import uint8_batches


def test_batches_are_the_bits_of_normalizing_the_padded_split_first() -> None:
    """uint8 until gathered, normalized per batch: the same floats as normalizing the whole
    padded split once and gathering from that."""
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    mean, std = NORMALIZATIONS["cifar10"]
    batches = TensorBatches(
        images, torch.arange(50), 16, mean, std, augment=Augment(crop=True, flip=True)
    )
    idx, (dy, dx), flips = torch.randperm(50), torch.randint(0, 9, (2, 50)), torch.arange(50) % 2
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    whole_split = torch.addcmul(batches.normalize.shift, padded.float(), batches.normalize.scale)
    expected = whole_split.unfold(2, 32, 1).unfold(3, 32, 1)[idx, :, dy, dx]
    expected = torch.where(flips.bool()[:, None, None, None], expected.flip(-1), expected)
    assert torch.equal(batches.batch(idx, dy, dx, flips), expected)


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("flip_mode", ["random", "alternate"])
def test_batch_gather_path_gives_the_split_paths_batches(
    pad_mode: str, flip_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-batch path (selected on MPS) is tested here by selecting it on the CPU."""
    images = torch.randint(0, 256, (70, 3, 32, 32), dtype=torch.uint8)
    augment = Augment(crop=True, flip=True, padding=3, pad_mode=pad_mode, flip_mode=flip_mode)
    paths = {
        gather: TensorBatches(
            images,
            torch.arange(70),
            16,
            (0.5,) * 3,
            (0.2,) * 3,
            shuffle=True,
            augment=augment,
            seed=5,
            gather=gather,
            channels_last=True,
        )
        for gather in ("split", "batch")
    }
    assert paths["split"].gather == "split" and paths["batch"].gather == "batch"
    split = list(paths["split"])
    padded = []  # the number of images of each padding on the batch path
    pad = tensor_batches.pad_images
    monkeypatch.setattr(
        tensor_batches, "pad_images", lambda x, *args: padded.append(len(x)) or pad(x, *args)
    )
    batch = list(paths["batch"])
    assert len(split) == len(batch) == 5
    for (xs, ys), (xb, yb) in zip(split, batch, strict=True):
        assert torch.equal(xs, xb) and torch.equal(ys, yb)
        assert xb.is_contiguous(memory_format=torch.channels_last)
    assert padded and max(padded) <= 16  # a batch at a time, never the split


def flips_per_image(images: torch.Tensor, batches: TensorBatches) -> torch.Tensor:
    """1 where an image came out mirrored, by image index (labels are the indices)."""
    seen = torch.full((len(images),), -1)
    for x, idx in batches:
        mirrored = (x == images[idx].flip(-1).float()).flatten(1).all(1)
        seen[idx] = mirrored.long()
    return seen


def test_alternate_flips_mirror_each_image_the_other_way_every_epoch() -> None:
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    epoch = [0]
    batches = uint8_batches(
        images,
        shuffle=True,
        augment=Augment(flip=True, flip_mode="alternate"),
        epoch=lambda: epoch[0],
    )
    flips = []
    for e in range(3):
        epoch[0] = e
        flips.append(flips_per_image(images, batches))
    assert (flips[0] >= 0).all() and 16 < int(flips[0].sum()) < 48  # random in epoch 0
    assert torch.equal(flips[1], 1 - flips[0]) and torch.equal(flips[2], flips[0])
    other_seed = uint8_batches(
        images, shuffle=True, augment=Augment(flip=True, flip_mode="alternate"), seed=1
    )
    assert not torch.equal(flips_per_image(images, other_seed), flips[0])


def rank_batches(n: int, rank: int, world_size: int, **kwargs) -> TensorBatches:
    picture = torch.randint(0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    one_image = picture.to(torch.uint8).expand(n, -1, -1, -1)
    kwargs = {"shuffle": True, "augment": Augment(crop=True, flip=True), "seed": 3, **kwargs}
    return uint8_batches(one_image.contiguous(), rank=rank, world_size=world_size, **kwargs)


def test_ranks_share_one_order_and_draw_their_own_augmentation() -> None:
    shards = [list(rank_batches(96, r, 3)) for r in range(3)]
    indices = [torch.cat([y for _, y in shard]) for shard in shards]
    assert [len(i) for i in indices] == [32, 32, 32]
    assert len({len(rank_batches(96, r, 3)) for r in range(3)}) == 1
    assert torch.equal(torch.cat(indices).sort().values, torch.arange(96))  # disjoint, covering
    # all images are the same picture, so different batches mean different crops or flips
    assert not torch.equal(shards[0][0][0], shards[1][0][0])
    again = list(rank_batches(96, 1, 3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, shards[1], strict=True))
    next_epoch = list(rank_batches(96, 1, 3, epoch=lambda: 1))
    assert not torch.equal(next_epoch[0][0], shards[1][0][0])


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_rank_shards_are_disjoint_equal_and_cover_the_split(
    world_size: int, drop_last: bool
) -> None:
    """103 images (a prime, so no world size divides it) in batches of 8: every rank gets as many
    images and batches as the others (DDP ranks step together), no image twice, and only what
    equal shards (and, with ``drop_last``, full batches) cannot hold is left out of an epoch."""
    n, batch_size = 103, 8
    for epoch in (0, 1):
        ranks = [
            TensorBatches(
                torch.zeros(n, 3, 32, 32, dtype=torch.uint8),
                torch.arange(n),  # labels: the image indices
                batch_size,
                (0.5,) * 3,
                (0.25,) * 3,
                shuffle=True,
                augment=Augment(crop=True, flip=True),
                rank=rank,
                world_size=world_size,
                drop_last=drop_last,
                epoch=lambda e=epoch: e,
            )
            for rank in range(world_size)
        ]
        shards = [[y for _, y in batches] for batches in ranks]
        assert len({len(batches) for batches in ranks}) == 1
        assert [len(shard) for shard in shards] == [len(ranks[0])] * world_size
        seen = [torch.cat(shard) for shard in shards]
        assert len({len(images) for images in seen}) == 1  # equal lengths
        everything = torch.cat(seen)
        assert len(everything.unique()) == len(everything)  # disjoint
        per_rank = n // world_size
        if drop_last:
            per_rank -= per_rank % batch_size
            assert all(len(y) == batch_size for shard in shards for y in shard)
        assert len(everything) == world_size * per_rank  # all that equal shards can hold
        assert n - len(everything) < world_size * (batch_size if drop_last else 1)
        assert set(everything.tolist()) <= set(range(n))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("gather", ["split", "batch"])
def test_epochs_of_batches_never_wait_for_the_gpu(gather: str) -> None:
    """An epoch's draws arrive in one copy from pinned memory; a blocking copy (or any other
    synchronization) raises under the debug mode."""
    images = torch.randint(0, 256, (500, 3, 32, 32), dtype=torch.uint8, device="cuda")
    augment = Augment(crop=True, flip=True, pad_mode="reflect", flip_mode="alternate")
    epoch = [0]
    batches = TensorBatches(
        images,
        torch.arange(500, device="cuda"),
        64,
        (0.5,) * 3,
        (0.25,) * 3,
        shuffle=True,
        augment=augment,
        epoch=lambda: epoch[0],
        drop_last=True,
        gather=gather,
    )
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for epoch[0] in range(2):
            shapes = {tuple(x.shape) for x, _ in batches}
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert shapes == {(64, 3, 32, 32)} and len(batches) == 7
