"""The on-disk cache of decoded splits: where it lives, when it is still valid, how it is written.

Decoding 60,000 images takes longer than a small model's epoch, so each split is decoded once into
``cifarlab-<split>-v<CACHE_VERSION>.pt``. A cache is trusted only while the files it was built
from are unchanged (``_fingerprint``) and its tensors are intact (``_checksum``); anything else is
rebuilt, and written atomically so that a crash never leaves half a cache behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from cifarlab.data.cifar import CIFAR10_BATCHES, CIFAR10_DIR, CIFAR100_DIR, CIFAR100_FILES
from cifarlab.data.folders import scan_folder
from cifarlab.data.image_set import ImageSet
from cifarlab.data.sources import read_source, source_classes
from cifarlab.errors import CifarlabError
from cifarlab.files import FileWriteError, save_torch, write_atomic
from cifarlab.utils import log

CACHE_VERSION = 4  # part of a cache's name: a cache of another version is never read


def _data_cache_dir(source: str, root: Path) -> Path:
    """The cache's place next to the data (where torchvision's pickles are, for CIFAR)."""
    pickles = {"cifar10": CIFAR10_DIR, "cifar100": CIFAR100_DIR}
    return root / pickles[source] if source in pickles else root / ".cifarlab-cache"


def _writable(folder: Path) -> bool:
    """Whether files can be made in ``folder``, or in its nearest existing parent if it is yet to
    be made. ``os.access`` answers for this process's user (root may write anywhere)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def _root_key(root: Path) -> str:
    """A folder name for ``root``'s cache inside a shared cache folder: readable and unique."""
    resolved = root.resolve()
    return f"{resolved.name or 'root'}-{hashlib.sha1(str(resolved).encode()).hexdigest()[:10]}"


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifarlab"


_announced: set[Path] = set()


def cache_dir_for(source: str, root: Path, cache_dir: str | Path | None = None) -> Path:
    """Where the decoded splits are cached: ``data.cache_dir`` when given, else next to the data,
    else (the data folder is read-only) in the user's cache folder, which is said once."""
    root = Path(root)
    if cache_dir is not None:
        folder = Path(cache_dir).expanduser() / _root_key(root)
        if not _writable(folder):
            raise CifarlabError(
                f"data.cache_dir={cache_dir} is not writable, so the decoded images of {root} "
                "cannot be cached there. Point data.cache_dir at a folder you may write to, or "
                "leave it null to cache next to the data (or in ~/.cache/cifarlab when the data "
                "folder is read-only)."
            )
        return folder
    folder = _data_cache_dir(source, root)
    if _writable(folder):
        return folder
    fallback = user_cache_dir() / _root_key(root)
    if fallback not in _announced:
        _announced.add(fallback)
        log.warning(
            "The data folder %s is read-only; caching its decoded images in %s instead "
            "(set data.cache_dir to choose another folder).",
            root,
            fallback,
        )
    return fallback


def cache_path(
    source: str,
    root: Path,
    split: str,
    cache_dir: str | Path | None = None,
    label_type: str = "fine",
    image_size: int = 32,
) -> Path:
    """One file per split; CIFAR-100's name says its source and label type, a folder's its
    image size (other than 32), so that every variant of one ``data.root`` is kept side by side."""
    variant = f"cifar100-{label_type}-{split}" if source == "cifar100" else split
    if image_size != 32:
        variant += f"-{image_size}px"
    return cache_dir_for(source, root, cache_dir) / f"cifarlab-{variant}-v{CACHE_VERSION}.pt"


PICKLES = {"cifar10": (CIFAR10_DIR, CIFAR10_BATCHES), "cifar100": (CIFAR100_DIR, CIFAR100_FILES)}


def _fingerprint(
    source: str, root: Path, split: str, classes: Sequence[str], label_type: str, image_size: int
) -> str:
    """Changes whenever the files a cache was built from change (names, sizes, times)."""
    settings = f"{source}|{split}|{','.join(classes)}"
    # only settings that differ from CIFAR-10 at 32x32 are added, so a CIFAR-10 split keeps one
    # fingerprint whatever settings there are
    settings += f"|{label_type}" if source == "cifar100" else ""
    settings += f"|{image_size}px" if image_size != 32 else ""
    digest = hashlib.sha1(settings.encode())
    if source in PICKLES:
        folder, files = PICKLES[source]
        for name in files[split]:
            st = (root / folder / name).stat()
            digest.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    else:
        lines = []
        for entry, label in scan_folder(root, split, classes):
            st = entry.stat()
            lines.append(f"{label}|{entry.name}|{st.st_size}|{st.st_mtime_ns}")
        digest.update("\n".join(lines).encode())
    return digest.hexdigest()


def _checksum(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A digest of the tensors themselves: torch.load does not notice flipped bytes in a file."""
    digest = hashlib.sha1(images.contiguous().numpy().data)
    digest.update(labels.contiguous().numpy().data)
    return digest.hexdigest()


def _read_cache(path: Path, fingerprint: str) -> ImageSet | None:
    """The cached split at ``path`` if it is there, readable and built from the same files."""
    if not path.exists():
        return None
    try:
        cached = torch.load(path, weights_only=True)
        if cached["fingerprint"] == fingerprint and cached["checksum"] == _checksum(
            cached["images"], cached["labels"]
        ):
            return ImageSet(cached["images"], cached["labels"], list(cached["classes"]))
    except Exception:
        pass
    return None


def _write_cache(path: Path, fingerprint: str, data: ImageSet) -> None:
    """Saves ``data`` for the next run. A disk that refuses it (full, read-only) only costs
    decoding again next time, so the run goes on with the decoded images and one line says why."""
    payload = {
        "fingerprint": fingerprint,
        "checksum": _checksum(data.images, data.labels),
        "images": data.images,
        "labels": data.labels,
        "classes": data.classes,
    }
    try:
        write_atomic(path, lambda tmp: save_torch(payload, tmp))
    except FileWriteError as err:
        log.warning(
            "Could not write the data cache %s (%s); going on without it (the images are "
            "decoded again next run).",
            path,
            err.reason,
        )


def load_split(
    source: str,
    root: str | Path,
    split: str,
    cache_dir: str | Path | None = None,
    label_type: str = "fine",
    image_size: int = 32,
) -> ImageSet:
    """The split as tensors, from the on-disk cache when it matches the files, else decoded anew.

    A cache that is stale, truncated, corrupt or unreadable is rebuilt rather than trusted.
    """
    root = Path(root)
    classes = source_classes(source, root, label_type)
    fingerprint = _fingerprint(source, root, split, classes, label_type, image_size)
    path = cache_path(source, root, split, cache_dir, label_type, image_size)
    # a read-only data folder may come with its cache already built
    for candidate in dict.fromkeys([path, _data_cache_dir(source, root) / path.name]):
        cached = _read_cache(candidate, fingerprint)
        if cached is not None:
            return cached
    data = read_source(source, root, split, classes, label_type=label_type, image_size=image_size)
    _write_cache(path, fingerprint, data)
    return data
