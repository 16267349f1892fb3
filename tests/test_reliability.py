"""Bad input data is named, and a corrupt cache is rebuilt rather than served."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cifarlab.data import cache_path, load_split
from cifarlab.errors import CifarlabError

from .conftest import make_folder


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


def test_a_corrupt_cache_is_rebuilt_not_served(tmp_path: Path) -> None:
    """Flipped bytes inside the image tensor load without complaint from torch.load."""
    root = make_folder(tmp_path / "d", n_train=5, n_test=3)
    good = load_split("folder", root, "test")
    path = cache_path("folder", root, "test")
    raw = bytearray(path.read_bytes())
    stored = bytes(good.images.flatten()[:64].tolist())
    start = raw.index(stored)
    raw[start : start + 64] = bytes(255 - b for b in stored)
    path.write_bytes(bytes(raw))
    assert not torch.equal(torch.load(path, weights_only=True)["images"], good.images)
    assert torch.equal(load_split("folder", root, "test").images, good.images)
    assert torch.equal(torch.load(path, weights_only=True)["images"], good.images)
