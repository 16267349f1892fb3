"""cifarlab.data.augment: crops (zero or reflected borders) and flips of whole uint8 batches."""

import pytest
import torch

from cifarlab.data import NORMALIZATIONS, Augment, TensorBatches, pad_images

from .data_helpers import crops_of, uint8_batches


def test_crop_and_flip_keep_pixels_and_shift_them() -> None:
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    idx, none = torch.arange(64), torch.zeros(64, dtype=torch.int64)
    flips = torch.arange(64) % 2
    flipped = uint8_batches(images, augment=Augment(flip=True)).batch(idx, none, none, flips)
    assert torch.equal(flipped[::2], images[::2].float())
    assert torch.equal(flipped[1::2], images[1::2].flip(-1).float())
    dy, dx = torch.randint(0, 9, (2, 64))
    cropped = uint8_batches(images, augment=Augment(crop=True)).batch(idx, dy, dx, none)
    # a crop offset by (dy, dx) is the image shifted, zero-filled at the border
    assert torch.equal(cropped, crops_of(images)[idx, :, dy, dx])


def test_zero_padding_is_what_black_pixels_normalize_to() -> None:
    images = torch.full((40, 3, 32, 32), 255, dtype=torch.uint8)
    mean, std = NORMALIZATIONS["cifar10"]
    batches = TensorBatches(
        images, torch.arange(40), 40, mean, std, shuffle=True, augment=Augment(crop=True)
    )
    x, _ = next(iter(batches))
    white, black = (batches.normalize(torch.full((1, 3, 1, 1), v)) for v in (255, 0))
    is_white, is_black = (x == white).all(1), (x == black).all(1)
    assert (is_white | is_black).all() and is_black.any() and is_white.any()
    # with padding 4, a crop shows 0 to 4 black rows and columns
    assert is_black.flatten(1).sum(1).max() <= 32 * 32 - 28 * 28


def test_reflect_padding_mirrors_the_border() -> None:
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    for pad in (1, 4, 31):
        assert torch.equal(
            pad_images(images, pad, "reflect").float(),
            torch.nn.functional.pad(images.float(), (pad,) * 4, mode="reflect"),
        )
    idx = torch.arange(20)
    dy, dx = torch.randint(0, 9, (2, 20))
    batches = uint8_batches(images, augment=Augment(crop=True, pad_mode="reflect"))
    reflected = crops_of(images, 4, "reflect")[idx, :, dy, dx]
    assert torch.equal(batches.batch(idx, dy, dx, torch.zeros(20)), reflected)


@pytest.mark.parametrize("gather", ["split", "batch"])
@pytest.mark.parametrize("pad_mode", ["zeros", "reflect"])
def test_crop_and_flip_of_normalized_batches_pad_as_configured(pad_mode: str, gather: str) -> None:
    """Crop and flip together, with CIFAR-10's normalization: the same as normalizing the images
    first, padding them (zero padding with the value a black pixel normalizes to, reflect padding
    with the mirrored border), cropping and mirroring, built here with torch's own operations."""
    images = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS["cifar10"])
    augment = Augment(crop=True, flip=True, padding=4, pad_mode=pad_mode)
    batches = TensorBatches(
        images, torch.arange(48), 48, *NORMALIZATIONS["cifar10"], augment=augment, gather=gather
    )
    idx, flips = torch.randperm(48), torch.arange(48) % 2
    dy, dx = torch.randint(0, 9, (2, 48))
    dy[:4], dx[:4] = 0, 0  # the top left crop: 4 rows and columns of padding
    x = batches.batch(idx, dy, dx, flips)

    normalized = (images.float() / 255 - mean) / std
    black = -mean / std  # what a zero pixel normalizes to
    if pad_mode == "zeros":
        padded = torch.nn.functional.pad(normalized - black, (4,) * 4) + black
    else:
        padded = torch.nn.functional.pad(normalized, (4,) * 4, mode="reflect")
    expected = padded.unfold(2, 32, 1).unfold(3, 32, 1)[idx, :, dy, dx]
    expected = torch.where(flips.bool()[:, None, None, None], expected.flip(-1), expected)
    assert torch.allclose(x, expected, atol=1e-5)
    # the padded border of a top left crop: on the left, or on the right once mirrored
    border = (x[0, :, :4, :], x[1, :, :, -4:])  # image 0 is not flipped, image 1 is
    if pad_mode == "zeros":
        for strip in border:
            assert torch.allclose(strip, black[0].expand_as(strip), atol=1e-5)
    else:
        source = normalized[idx[0], :, 1:5, :].flip(1)  # rows 4, 3, 2, 1 above row 0
        assert torch.allclose(border[0][:, :, 4:], source[:, :, :28], atol=1e-5)
