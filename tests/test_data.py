import os
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

import cifarlab.data as data
from cifarlab.data import (
    CIFAR10_CLASSES,
    NORMALIZATIONS,
    CIFAR10DataModule,
    cache_path,
    crop_flip_windows,
    load_split,
    sample_windows,
)
from cifarlab.errors import CifarlabError

from .conftest import FOLDER_CLASSES, make_cifar10, make_folder


def datamodule(root: Path, **kwargs) -> CIFAR10DataModule:
    kwargs = {"source": "folder", "root": str(root), "val_size": 24, "batch_size": 16, **kwargs}
    dm = CIFAR10DataModule(**kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def test_folder_splits_are_disjoint_and_the_same_every_run(folder_root: Path) -> None:
    a, b = datamodule(folder_root), datamodule(folder_root)
    assert a.class_names == list(FOLDER_CLASSES)
    assert len(a.splits["train"].labels) == 3 * 40 - 24
    assert len(a.splits["val"].labels) == 24
    assert len(a.splits["test"].labels) == 3 * 12
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].images, b.splits[split].images)
    train = {bytes(x.numpy()) for x in a.splits["train"].images}
    assert not any(bytes(x.numpy()) in train for x in a.splits["val"].images)
    other_seed = datamodule(folder_root, split_seed=1)
    assert not torch.equal(other_seed.splits["val"].images, a.splits["val"].images)


def test_cifar10_format_is_read_with_its_labels(cifar10_root: Path) -> None:
    dm = datamodule(cifar10_root, source="cifar10", val_size=10)
    assert dm.class_names == list(CIFAR10_CLASSES)
    assert len(dm.splits["train"].labels) == 5 * 20 - 10
    assert torch.equal(dm.splits["test"].labels.bincount(), torch.full((10,), 3))
    # colour channel label % 3 is the bright one in the generated images
    test = dm.splits["test"]
    brightest = test.images.float().mean(dim=(2, 3)).argmax(dim=1)
    assert torch.equal(brightest, test.labels % 3)


def test_class_subset_remaps_labels_in_source_order(cifar10_root: Path) -> None:
    dm = datamodule(cifar10_root, source="cifar10", val_size=10, classes=["bird", "airplane"])
    assert dm.class_names == ["airplane", "bird"]
    assert dm.num_classes == 2
    test = dm.splits["test"]
    assert sorted(test.labels.unique().tolist()) == [0, 1]
    assert len(test.labels) == 6
    full = datamodule(cifar10_root, source="cifar10", val_size=10)
    birds = full.splits["test"].images[full.splits["test"].labels == 2]
    assert torch.equal(test.images[test.labels == 1], birds)
    # the validation images of a subset are the full run's validation images of those classes
    full_val = full.splits["val"]
    keep = (full_val.labels == 0) | (full_val.labels == 2)
    assert torch.equal(dm.splits["val"].images, full_val.images[keep])


@pytest.mark.parametrize(
    ("classes", "needle"),
    [
        (["bird", "unicorn"], "unicorn"),
        (["bird", "bird", "cat"], "more than once"),
        (["bird"], "at least 2"),
    ],
)
def test_bad_class_lists_are_refused(folder_root: Path, classes: list[str], needle: str) -> None:
    with pytest.raises(CifarlabError, match=needle):
        _ = CIFAR10DataModule(source="folder", root=str(folder_root), classes=classes).class_names


@pytest.mark.parametrize("normalize", sorted(NORMALIZATIONS))
def test_batches_are_normalized_per_channel(folder_root: Path, normalize: str) -> None:
    dm = datamodule(folder_root, normalize=normalize, eval_batch_size=1000)
    x, y = next(iter(dm.test_dataloader()))
    raw = dm.splits["test"].images.float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS[normalize])
    assert x.dtype == torch.float32
    assert torch.allclose(x, (raw - mean) / std, atol=1e-5)
    assert torch.equal(y, dm.splits["test"].labels)


def test_train_batches_shuffle_by_epoch_and_cover_every_image(folder_root: Path) -> None:
    dm = datamodule(folder_root)
    batches = dm.train_dataloader()
    epoch = [0]
    batches.epoch = lambda: epoch[0]
    first = torch.cat([y for _, y in batches])
    again = torch.cat([y for _, y in batches])
    epoch[0] = 1
    second = torch.cat([y for _, y in batches])
    assert len(batches) == -(-len(first) // 16)
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    assert torch.equal(first.sort().values, dm.splits["train"].labels.sort().values)


def augment_batch(images: torch.Tensor, g: torch.Generator, *, crop: bool, flip: bool):
    windows = crop_flip_windows(images, crop=crop, flip=flip)
    return sample_windows(windows, torch.arange(len(images)), g)


def test_crop_and_flip_keep_pixels_and_shift_them() -> None:
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    flipped = augment_batch(images, g, crop=False, flip=True)
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()
    cropped = augment_batch(images, g, crop=True, flip=False)
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    moved = ~(cropped == images).flatten(1).all(1)
    assert moved.sum() > 32  # 80 of 81 offsets move the image
    # a crop offset by (dy, dx) is the image shifted, zero-filled at the border
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    windows = padded.unfold(2, 32, 1).unfold(3, 32, 1)  # (n, c, 9, 9, 32, 32)
    for i in range(8):
        matches = (windows[i] == cropped[i][:, None, None]).flatten(3).all(-1).all(0)
        assert matches.any()


def test_augment_options(folder_root: Path) -> None:
    assert datamodule(folder_root, augment=True).augment == "crop_flip"
    assert datamodule(folder_root, augment=False).augment == "none"
    with pytest.raises(CifarlabError, match="data.augment"):
        CIFAR10DataModule(source="folder", root=str(folder_root), augment="rotate")


def test_cache_is_reused_and_rebuilt_when_files_change(tmp_path: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "d", n_train=5, n_test=3)
    first = load_split("folder", root, "test")
    assert cache_path("folder", root, "test").is_file()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(data, "_read_folder", no_decoding)
    assert torch.equal(load_split("folder", root, "test").images, first.images)
    monkeypatch.undo()

    extra = root / "test" / "cat" / "0099.png"
    extra.write_bytes((root / "test" / "bird" / "0000.png").read_bytes())
    grown = load_split("folder", root, "test")
    assert len(grown.labels) == len(first.labels) + 1


def test_truncated_cache_is_rebuilt(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n_train=5, n_test=3)
    good = load_split("folder", root, "test")
    path = cache_path("folder", root, "test")
    path.write_bytes(path.read_bytes()[:100])
    again = load_split("folder", root, "test")
    assert torch.equal(again.images, good.images)
    assert torch.load(path, weights_only=True)["images"].shape == good.images.shape


def test_missing_cifar10_without_network_says_where_and_what_to_do(
    tmp_path: Path, monkeypatch
) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    dm = CIFAR10DataModule(source="cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(CifarlabError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "data.source=folder" in message and "no network" in message


def test_folder_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CifarlabError, match="does not exist"):
        _ = CIFAR10DataModule(source="folder", root=str(tmp_path)).class_names
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    os.rename(root / "test" / "cat", root / "test" / "kitten")
    with pytest.raises(CifarlabError, match=r"test/cat is missing"):
        load_split("folder", root, "test")


def test_non_rgb_image_is_named(tmp_path: Path) -> None:
    from PIL import Image

    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    bad = root / "train" / "bird" / "0001.png"
    Image.new("L", (32, 32)).save(bad)
    with pytest.raises(CifarlabError, match="0001.png"):
        load_split("folder", root, "train")


def test_bad_settings_are_refused(folder_root: Path) -> None:
    with pytest.raises(CifarlabError, match="data.source"):
        CIFAR10DataModule(source="imagenet")
    with pytest.raises(CifarlabError, match="data.batch_size"):
        CIFAR10DataModule(source="folder", root=str(folder_root), batch_size=0)
    with pytest.raises(CifarlabError, match="data.normalize"):
        CIFAR10DataModule(source="folder", root=str(folder_root), normalize="imagenet")
    dm = CIFAR10DataModule(source="folder", root=str(folder_root), val_size=120)
    with pytest.raises(CifarlabError, match="val_size=120"):
        dm.setup()


def test_make_cifar10_helper_matches_torchvision_reader(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path)
    split = load_split("cifar10", root, "train")
    assert split.images.shape == (100, 3, 32, 32)
