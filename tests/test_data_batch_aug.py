"""Cutout, mixup and cutmix do to a batch, its labels and its loss what they say."""

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifarlab.data.batch_aug import BatchAugment, cutmix, cutout, mixup
from cifarlab.training.module import ClassifierModule


def runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(first, count) of the True entries of a 1-D mask, one pair per contiguous run."""
    idx = mask.nonzero().flatten().tolist()
    out: list[tuple[int, int]] = []
    for i in idx:
        if out and out[-1][0] + out[-1][1] == i:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out


@pytest.mark.parametrize("size", [1, 8, 16])
def test_cutout_zeroes_one_square_of_the_size_in_each_image(size: int) -> None:
    x = torch.rand(300, 3, 32, 32) + 0.5  # no zeros of its own
    out = cutout(x, size, np.random.default_rng(0))
    zero = out == 0
    assert torch.equal(zero.all(1), zero.any(1))  # every channel of a pixel, or none
    assert torch.equal(out[~zero], x[~zero])  # nothing else changes
    full = 0
    for mask in zero[:, 0]:
        rows, cols = runs(mask.any(1)), runs(mask.any(0))
        assert len(rows) == 1 and len(cols) == 1  # one rectangle ...
        (top, h), (left, w) = rows[0], cols[0]
        assert mask[top : top + h, left : left + w].all() and mask.sum() == h * w  # ... filled
        # the side is the size, or shorter where the square reaches past the border
        assert h == size or (h < size and (top == 0 or top + h == 32))
        assert w == size or (w < size and (left == 0 or left + w == 32))
        full += h == w == size
    assert 0 < full < len(x) or size == 1  # both whole squares and squares clipped at the edge


def test_cutout_is_seeded_and_keeps_channels_last() -> None:
    x = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    a = cutout(x, 8, np.random.default_rng(5))
    assert torch.equal(a, cutout(x, 8, np.random.default_rng(5)))
    assert not torch.equal(a, cutout(x, 8, np.random.default_rng(6)))
    assert a.is_contiguous(memory_format=torch.channels_last)


def test_mixup_blends_each_image_with_its_partner_by_the_drawn_lam() -> None:
    x, y = torch.randn(32, 3, 32, 32), torch.arange(32)
    mixed, t = mixup(x, y, 0.4, np.random.default_rng(7))
    assert t.lam == np.random.default_rng(7).beta(0.4, 0.4)  # the generator's first draw
    assert torch.equal(t.y_a, y) and sorted(t.y_b.tolist()) == y.tolist()  # a permutation
    assert (t.y_b != y).any()
    torch.testing.assert_close(mixed, t.lam * x + (1 - t.lam) * x[t.y_b])


def test_mixup_lam_follows_beta_alpha_alpha() -> None:
    """Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)); a small batch keeps it quick."""
    x, y = torch.zeros(2, 3, 4, 4), torch.arange(2)
    for alpha in (0.2, 2.0):
        rng = np.random.default_rng(0)
        lams = np.array([mixup(x, y, alpha, rng)[1].lam for _ in range(4000)])
        assert abs(lams.mean() - 0.5) < 0.02
        assert lams.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.08)


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_pastes_one_box_and_lam_is_the_area_kept(seed: int) -> None:
    x, y = torch.randn(64, 3, 32, 32), torch.arange(64)
    mixed, t = cutmix(x, y, 1.0, np.random.default_rng(seed))
    moved = t.y_b != y
    changed = (mixed != x).any(1)[moved]  # (images, h, w): where the pasted box shows
    box = changed.any(0)
    rows, cols = runs(box.any(1)), runs(box.any(0))
    area = 0
    if rows:  # the box can be empty when lam is drawn near 1
        assert len(rows) == 1 and len(cols) == 1
        (top, h), (left, w) = rows[0], cols[0]
        area = h * w
        assert changed[:, top : top + h, left : left + w].all()  # the same box in every image
        inside = (slice(None), slice(None), slice(top, top + h), slice(left, left + w))
        assert torch.equal(mixed[inside], x[t.y_b][inside])
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[box] = False
    assert torch.equal(mixed[:, :, outside], x[:, :, outside])
    assert t.lam == 1 - area / (32 * 32)


def test_cutmix_box_follows_the_drawn_lam() -> None:
    """The box covers about ``1 - lam0`` of the image, ``lam0`` the generator's Beta draw, and
    never more: boxes shrink to whole even sides and are clipped at the border."""
    x, y = torch.zeros(2, 3, 32, 32), torch.arange(2)
    unclipped = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        lam0, cy, cx = rng.beta(1.0, 1.0), rng.integers(0, 32), rng.integers(0, 32)
        lam = cutmix(x, y, 1.0, np.random.default_rng(seed))[1].lam
        assert lam >= lam0
        side = 32 * np.sqrt(1 - lam0)  # of the square box with area 1 - lam0
        if min(cy, cx) >= side / 2 and max(cy, cx) + side / 2 <= 32:
            unclipped += 1
            assert lam - lam0 <= 4 * side / 1024  # a side rounded down by at most 2 pixels
    assert unclipped > 10


def test_mixed_loss_is_the_lam_weighted_sum_and_accuracy_counts_the_dominant_label() -> None:
    """Through ClassifierModule.training_step: replaying the seeded draws gives the batch it saw."""
    torch.manual_seed(0)
    module = ClassifierModule(
        model={"name": "lenet", "width": 6},
        class_names=[str(i) for i in range(10)],
        optimizer={"name": "sgd", "lr": 0.1},
        data={"seed": 3},
        batch_aug={"mixup_alpha": 1.0},
    )
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    loss = module.training_step((x, y), 0)
    mixed, t = BatchAugment(mixup_alpha=1.0, seed=3)(x, y)
    logits = module.net(mixed)
    ce_a, ce_b = F.cross_entropy(logits, t.y_a), F.cross_entropy(logits, t.y_b)
    torch.testing.assert_close(loss, t.lam * ce_a + (1 - t.lam) * ce_b)
    assert 0.05 < t.lam < 0.95 and not torch.isclose(loss, ce_a)  # the labels really were mixed
    # seed 3 draws lam < 0.5, so the dominant label is the partner's, not the batch's own
    assert t.lam < 0.5 and (t.y_b != y).any()
    expected = (logits.argmax(1) == t.y_b).float().mean()
    torch.testing.assert_close(module.train_epoch_metrics()["train/acc"], expected)


def test_mixed_loss_with_label_smoothing_is_the_loss_of_the_mixed_soft_label() -> None:
    logits, y = torch.randn(8, 5), torch.arange(8) % 5
    _, t = mixup(torch.zeros(8, 3, 4, 4), y, 1.0, np.random.default_rng(1))
    smooth = partial(F.cross_entropy, label_smoothing=0.2)
    soft = t.lam * F.one_hot(t.y_a, 5) + (1 - t.lam) * F.one_hot(t.y_b, 5)
    torch.testing.assert_close(t.loss(logits, smooth), smooth(logits, soft.float()))


def test_batch_augment_off_is_the_identity() -> None:
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    out, t = BatchAugment()(x, y)
    assert out is x and t.lam == 1.0 and t.dominant is y


def test_both_mixes_are_used_and_reseeding_replays_an_epoch() -> None:
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16)
    aug = BatchAugment(cutout=4, mixup_alpha=1.0, cutmix_alpha=1.0, seed=9)
    aug.reseed(2, 0)
    first = [aug(x, y) for _ in range(20)]
    # mixup changes every pixel of a moved image, cutmix only a box
    kinds = {bool((out != x).all(1).all((1, 2))[t.y_b != y].all()) for out, t in first}
    assert kinds == {True, False}
    aug(x, y)  # draws from a later batch are forgotten by reseeding
    aug.reseed(2, 0)
    assert all(torch.equal(aug(x, y)[0], out) for out, _ in first)
    aug.reseed(3, 0)
    assert not torch.equal(aug(x, y)[0], first[0][0])
