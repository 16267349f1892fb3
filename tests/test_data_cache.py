"""cifarlab.data.cache: the decoded splits on disk, where they go and when they are rebuilt."""

import os
from pathlib import Path

import pytest
import torch

import cifarlab.data.cache as cache
from cifarlab.data import cache_path, class_mixed_order, load_split
from cifarlab.errors import CifarlabError
from cifarlab.files import temp_path

from .conftest import make_folder
from .data_helpers import datamodule
from .os_helpers import dead_pid, file_size_limit, limit_file_size


def read_only(monkeypatch: pytest.MonkeyPatch, *folders: Path) -> None:
    """Makes ``folders`` and all below them read-only (all folders when none are given) to whoever
    asks ``os.access``, as cifarlab does. Tests run as root, whom chmod does not stop."""
    can_access = os.access

    def access(path: str | os.PathLike, mode: int, **kwargs: object) -> bool:
        inside = not folders or any(Path(path).is_relative_to(f) for f in folders)
        return not (mode & os.W_OK and inside) and can_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_read_only_data_folder_gets_its_cache_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    read_only(monkeypatch, root)
    with caplog.at_level("WARNING", logger="cifarlab"):
        first = load_split("folder", root, "test")
    assert not (root / ".cifarlab-cache").exists()
    [cached] = (tmp_path / "home" / "cifarlab").glob("*/cifarlab-test-v*.pt")
    assert "read-only" in caplog.text and str(cached.parent) in caplog.text
    with monkeypatch.context() as patch:
        patch.setattr(cache, "read_source", lambda *a: pytest.fail("decoded again"))
        assert torch.equal(load_split("folder", root, "test").images, first.images)

    dm = datamodule(root, val_size=2, cache_dir=str(tmp_path / "chosen"))
    assert len(list((tmp_path / "chosen").glob("*/cifarlab-train-v*.pt"))) == 1
    assert torch.equal(dm.splits["test"].images, first.images[class_mixed_order(first.labels)])
    read_only(monkeypatch)
    with pytest.raises(CifarlabError, match=r"data.cache_dir=.*not writable"):
        load_split("folder", root, "test", cache_dir=tmp_path / "locked")


def test_a_read_only_data_folder_with_a_built_cache_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    first = load_split("folder", root, "test")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    read_only(monkeypatch)
    monkeypatch.setattr(cache, "read_source", lambda *a: pytest.fail("decoded again"))
    assert torch.equal(load_split("folder", root, "test").images, first.images)


def test_cache_is_reused_and_rebuilt_when_files_change(tmp_path: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "d", n_train=5, n_test=3)
    first = load_split("folder", root, "test")
    assert cache_path("folder", root, "test").is_file()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(cache, "read_source", no_decoding)
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


def test_a_cache_the_disk_refuses_costs_one_line_and_the_data_is_still_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)  # a test split of 18 KB
    with file_size_limit(), caplog.at_level("WARNING", logger="cifarlab"):
        limit_file_size(4096)
        served = load_split("folder", root, "test")
    path = cache_path("folder", root, "test")
    assert not path.parent.exists() or not list(path.parent.iterdir())
    [line] = caplog.messages
    assert f"Could not write the data cache {path} (File too large)" in line
    assert torch.equal(load_split("folder", root, "test").images, served.images)
    assert path.is_file()


def test_a_killed_cache_writes_temp_file_goes_at_the_next_cache_write(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    path = cache_path("folder", root, "test")
    path.parent.mkdir(parents=True)
    stale = temp_path(path, pid=dead_pid())
    stale.write_bytes(b"the first megabyte of a cache" * 40_000)
    load_split("folder", root, "test")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
