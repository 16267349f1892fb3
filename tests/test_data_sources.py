"""cifarlab.data.sources: reading CIFAR-10's pickles and folders of images."""

import logging
import os
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

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


def test_a_folder_without_images_is_named(tmp_path: Path) -> None:
    for name in ("bird", "cat"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "test" / name).mkdir(parents=True)
    (tmp_path / "train" / "bird" / "notes.txt").write_text("not an image")
    with pytest.raises(CifarlabError, match=f"No images .* found under {tmp_path / 'train'}"):
        load_split("folder", tmp_path, "train")


def test_every_unusable_image_is_named_in_one_paragraph(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    broken = [root / "test" / "cat" / "0001.png", root / "test" / "bird" / "0000.png"]
    for path in broken:
        path.write_bytes(b"\x89PNG but then nothing")
    Image.new("L", (40, 30)).save(root / "test" / "frog" / "0000.png")  # any size is usable
    with pytest.raises(CifarlabError) as info:
        load_split("folder", root, "test")
    message = str(info.value)
    assert "\n" not in message and message.startswith("2 of the 6 images")
    for path in broken:
        assert f"{path} cannot be decoded" in message
    assert "frog" not in message


def pictures_in_every_mode(folder: Path) -> dict[str, np.ndarray]:
    """32x32 pictures in modes and formats other than 8-bit RGB JPEG/PNG, each with the (32, 32, 3)
    uint8 RGB it shows, worked out here from how the pictures are made."""
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    gray = np.repeat(ramp[..., None], 3, axis=2)
    rgb = np.stack([ramp, ramp.T, 255 - ramp], axis=2)
    opaque = ramp >= 128  # the right half
    white = np.full_like(rgb, 255)
    palette = Image.fromarray(opaque.astype(np.uint8), "P")
    palette.putpalette([10, 20, 30, 200, 100, 50])
    colours = np.where(opaque[..., None], [200, 100, 50], [10, 20, 30]).astype(np.uint8)
    shows = {
        "bilevel.png": (Image.fromarray(opaque), np.where(opaque[..., None], 255, 0)),
        "gray.png": (Image.fromarray(ramp, "L"), gray),
        "gray16.png": (Image.fromarray(ramp.astype(np.uint16) * 257), gray),
        "int32.tif": (Image.fromarray(ramp.astype(np.int32) * 257), gray),
        "float.tif": (Image.fromarray(ramp.astype(np.float32) / 255), gray),
        "rgba.png": (
            Image.fromarray(np.dstack([rgb, np.where(opaque, 255, 0).astype(np.uint8)])),
            np.where(opaque[..., None], rgb, white),
        ),
        "cmyk.tif": (Image.fromarray(rgb).convert("CMYK"), rgb),
        "palette.gif": (palette, colours),
        "rgb.bmp": (Image.fromarray(rgb), rgb),
        "rgb.tiff": (Image.fromarray(rgb), rgb),
        "rgb.webp": (Image.fromarray(rgb), rgb),
    }
    for name, (image, _) in shows.items():
        image.save(folder / name, **({"lossless": True} if name.endswith(".webp") else {}))
    palette.save(folder / "transparent.png", transparency=0)
    shows["transparent.png"] = (palette, np.where(opaque[..., None], colours, white))
    return {
        name: np.broadcast_to(pixels, (32, 32, 3)).astype(np.uint8)
        for name, (_, pixels) in shows.items()
    }


def test_training_folder_reads_every_mode_and_format_at_32x32(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n_train=2, n_test=1)
    expected = pictures_in_every_mode(root / "train" / "cat")
    data = load_split("folder", root, "train")
    cat = data.images[data.labels == data.classes.index("cat")]
    assert len(cat) == 2 + len(expected)
    names = sorted([*expected, "0000.png", "0001.png"])
    for name, image in zip(names, cat, strict=True):
        if name in expected:
            shown = image.permute(1, 2, 0).numpy()
            assert np.array_equal(shown, expected[name]), name
    cached = load_split("folder", root, "train")  # the cache keeps what was read
    assert torch.equal(cached.images, data.images)


def test_hidden_and_other_files_are_skipped_in_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    (root / "train" / "bird" / "._0000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.INFO, logger="cifarlab"):
        data = load_split("folder", root, "train")
        assert torch.equal(load_split("folder", root, "train").images, data.images)
    assert len(data.labels) == 9
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped in")]
    assert len(said) == 1
    assert "2 hidden" in said[0] and "bird/._0000.png" in said[0]
    assert "1 not named as an image" in said[0] and "cat/notes.txt" in said[0]


def test_class_names_differing_only_in_unicode_form_are_one_class(tmp_path: Path) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # what Linux and macOS write for "café"
    root = make_folder(tmp_path / "d", classes=(composed, "dog"), n_train=3, n_test=2)
    os.rename(root / "test" / composed, root / "test" / decomposed)
    test = load_split("folder", root, "test")
    assert test.classes == [composed, "dog"]
    assert test.labels.tolist() == [0, 0, 1, 1]
    (root / "train" / decomposed).mkdir()
    with pytest.raises(CifarlabError, match="differ only in their Unicode form"):
        load_split("folder", root, "train")


def test_classes_only_in_test_are_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    for name in ("dog", "ship"):
        (root / "test" / name).mkdir()
        Image.new("RGB", (32, 32)).save(root / "test" / name / "0000.png")
    with pytest.raises(
        CifarlabError, match=r"test has class folders that .*train lacks: dog, ship"
    ):
        load_split("folder", root, "test")
