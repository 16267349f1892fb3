"""A folder of images per class (``data.source=folder``): its classes, its files, decoded into
tensors on all usable cores; every file passed over or refused is named."""

from __future__ import annotations

import functools
import logging
import os
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cifarlab.data.image_set import ImageSet
from cifarlab.data.pictures import PICTURE_SUFFIXES, try_load_picture
from cifarlab.errors import CifarlabError
from cifarlab.utils import log, usable_cpus


def _nfc(name: str) -> str:
    """A folder name in Unicode NFC: macOS writes "café" decomposed (NFD), most tools composed;
    both are one class."""
    return unicodedata.normalize("NFC", name)


def _hidden(name: str) -> bool:
    """Dot files and folders: .DS_Store, macOS's ._* AppleDouble files, .ipynb_checkpoints."""
    return name.startswith(".")


_said: set[str] = set()  # a scan runs for the cache check and again to decode: say it once


def _some(names: list[str]) -> str:
    return ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")


@dataclass
class _Skipped:
    """What a split's scan passed over, said in one log line (``say``)."""

    hidden: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    beside_classes: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)

    def say(self, folder: Path) -> None:
        """Hidden files alone are routine (INFO); anything else may be a mistake (WARNING)."""
        groups = [
            (self.hidden, "hidden (names starting with '.', such as macOS's ._* files)"),
            (self.not_images, f"not named as an image ({', '.join(sorted(PICTURE_SUFFIXES))})"),
            (self.beside_classes, "files beside the class folders"),
            (self.folders, "folders inside a class folder (not searched)"),
        ]
        parts = [f"{len(names)} {what}: {_some(names)}" for names, what in groups if names]
        line = f"Skipped in {folder}: {'; '.join(parts)}."
        if parts and line not in _said:
            _said.add(line)
            routine = not (self.not_images or self.beside_classes or self.folders)
            log.log(logging.INFO if routine else logging.WARNING, line)


def _class_folders_by_nfc(split_dir: Path, skipped: _Skipped) -> dict[str, Path]:
    """``split_dir``'s class folders by NFC name (hidden entries and loose files are noted in
    ``skipped``); refuses two whose names differ only in their Unicode form."""
    spelled: dict[str, list[Path]] = {}
    for p in sorted(split_dir.iterdir()) if split_dir.is_dir() else []:
        if _hidden(p.name):
            skipped.hidden.append(p.name)
        elif p.is_dir():
            spelled.setdefault(_nfc(p.name), []).append(p)
        else:
            skipped.beside_classes.append(p.name)
    twins = [" and ".join(repr(p.name) for p in ps) for ps in spelled.values() if len(ps) > 1]
    if twins:
        raise CifarlabError(
            f"{split_dir} has class folders whose names differ only in their Unicode form: "
            f"{'; '.join(twins)} (one composed, one decomposed, as macOS writes them). They name "
            "one class: move the images into one of them and remove the other."
        )
    return {name: paths[0] for name, paths in spelled.items()}


def folder_classes(root: Path) -> list[str]:
    """The class names of a folder source: ``train/``'s subfolders, in NFC, sorted."""
    train = root / "train"
    if not train.is_dir():
        raise CifarlabError(
            f"data.source=folder expects a folder {train} with one subfolder of images per class "
            f"(and {root / 'test'} alike), but {train} does not exist. Point data.root at a folder "
            "shaped like train/<class>/*.jpg and test/<class>/*.jpg, e.g. the unpacked "
            "cifar10-jpg/ archive."
        )
    classes = sorted(_class_folders_by_nfc(train, _Skipped()))
    if not classes:
        raise CifarlabError(f"{train} holds no class subfolders; expected train/<class>/<images>.")
    return classes


def _class_folders(split_dir: Path, classes: Sequence[str], skipped: _Skipped) -> dict[str, Path]:
    """``split_dir``'s class folders by NFC name; refuses a split that lacks one of ``classes``
    or has one that ``train/`` does not."""
    found = _class_folders_by_nfc(split_dir, skipped)
    missing = [c for c in classes if c not in found]
    extra = sorted(set(found) - set(classes))
    problems = []
    if missing:
        problems.append(
            f"Class folder {', '.join(str(split_dir / c) for c in missing)} is missing: every "
            f"class found in {split_dir.parent / 'train'} ({', '.join(classes)}) needs a folder "
            f"of images in {split_dir} too."
        )
    if extra:
        problems.append(
            f"{split_dir} has class folders that {split_dir.parent / 'train'} lacks: "
            f"{', '.join(extra)}. A model trained on train/ can never predict them, so their "
            f"images cannot be scored: add the classes to train/ or move them out of {split_dir}."
        )
    if problems:
        raise CifarlabError(" ".join(problems))
    return found


def scan_folder(root: Path, split: str, classes: Sequence[str]) -> list[tuple[os.DirEntry, int]]:
    """The image files of a split with their labels, sorted by name within each class.

    ``os.scandir`` rather than ``pathlib``: 60,000 files are listed and stat-ed on every start to
    check the cache, and that must take a fraction of a second. Hidden files, files of other
    suffixes and nested folders are passed over and said in one log line.
    """
    skipped = _Skipped()
    class_dirs = _class_folders(root / split, classes, skipped)
    files: list[tuple[os.DirEntry, int]] = []
    for label, name in enumerate(classes):
        class_dir = class_dirs[name]
        images = []
        with os.scandir(class_dir) as entries:
            for e in entries:
                shown = f"{class_dir.name}/{e.name}"
                if _hidden(e.name):
                    skipped.hidden.append(shown)
                elif e.is_dir():
                    skipped.folders.append(shown)
                elif os.path.splitext(e.name)[1].lower() in PICTURE_SUFFIXES:
                    images.append(e)
                else:
                    skipped.not_images.append(shown)
        files.extend((e, label) for e in sorted(images, key=lambda e: e.name))
    skipped.say(root / split)
    if not files:
        raise CifarlabError(
            f"No images ({', '.join(sorted(PICTURE_SUFFIXES))}) found under "
            f"{root / split}/<class>/. Check data.root."
        )
    return files


def _decode_one(path: Path, size: int) -> torch.Tensor | str:
    """A training image as (3, size, size) uint8 RGB, converted as predict.py converts every
    picture (any mode and size: ``square_rgb``), or why it cannot be one."""
    image = try_load_picture(path, size)
    return f"{path} cannot be decoded ({image})" if isinstance(image, str) else image


def read_folder(root: Path, split: str, classes: Sequence[str], image_size: int = 32) -> ImageSet:
    """Every image of a folder split at ``image_size``, decoded on all usable cores; every file
    that cannot be used is named, in one paragraph."""
    files = [(Path(e.path), label) for e, label in scan_folder(root, split, classes)]
    with ThreadPoolExecutor(max_workers=usable_cpus()) as pool:
        decode = functools.partial(_decode_one, size=image_size)
        images = list(pool.map(decode, (p for p, _ in files), chunksize=256))
    failures = [image for image in images if isinstance(image, str)]
    if failures:
        shown = "; ".join(failures[:5]) + (
            f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        )
        raise CifarlabError(
            f"{len(failures)} of the {len(files)} images under {root / split} cannot be used: "
            f"{shown}. Every image of a training folder must be a picture that Pillow reads "
            "(any size and mode: RGB, grayscale, palette, 16-bit, with transparency, ...); "
            "replace or remove these files."
        )
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ImageSet(torch.stack(images), labels, list(classes))
