"""cifarlab.data.sources: reading CIFAR-10's pickles and folders of images."""

import os
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from cifarlab.data import CIFAR10_CLASSES, CIFAR10DataModule, load_split
from cifarlab.errors import CifarlabError

from .conftest import make_cifar10, make_folder
from .data_helpers import datamodule


def test_cifar10_format_is_read_with_its_labels(cifar10_root: Path) -> None:
    dm = datamodule(cifar10_root, source="cifar10", val_size=10)
    assert dm.class_names == list(CIFAR10_CLASSES)
    assert len(dm.splits["train"].labels) == 5 * 20 - 10
    assert torch.equal(dm.splits["test"].labels.bincount(), torch.full((10,), 3))
    # colour channel label % 3 is the bright one in the generated images
    test = dm.splits["test"]
    brightest = test.images.float().mean(dim=(2, 3)).argmax(dim=1)
    assert torch.equal(brightest, test.labels % 3)


def test_make_cifar10_helper_matches_torchvision_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tests' pickles are what torchvision's CIFAR10 reads (images, labels, class names), and
    cifarlab's reader gives the same images in the same order. torchvision insists on the real
    files' md5 sums, the one check waived here."""
    import torchvision.datasets.cifar as tv_cifar
    from torchvision.transforms.functional import pil_to_tensor

    root = make_cifar10(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    for split, train in (("train", True), ("test", False)):
        reference = tv_cifar.CIFAR10(str(root), train=train)
        images = torch.stack([pil_to_tensor(image) for image, _ in reference])
        ours = load_split("cifar10", root, split)
        assert torch.equal(ours.images, images)
        assert ours.labels.tolist() == [label for _, label in reference]
        assert ours.classes == reference.classes == list(CIFAR10_CLASSES)
    assert ours.images.shape == (30, 3, 32, 32)
    assert load_split("cifar10", root, "train").images.shape == (100, 3, 32, 32)


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


def test_a_folder_without_images_is_named(tmp_path: Path) -> None:
    for name in ("bird", "cat"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "test" / name).mkdir(parents=True)
    (tmp_path / "train" / "bird" / "notes.txt").write_text("not an image")
    with pytest.raises(CifarlabError, match=f"No images .* found under {tmp_path / 'train'}"):
        load_split("folder", tmp_path, "train")


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    bad = root / "test" / "cat" / "0001.png"
    bad.write_bytes(b"\x89PNG but then nothing")
    with pytest.raises(CifarlabError, match=f"Cannot decode image {bad}"):
        load_split("folder", root, "test")
