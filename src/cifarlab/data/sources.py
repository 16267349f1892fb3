"""Reading the two sources into tensors: torchvision's CIFAR-10 pickles and folders of images.

Nothing here caches: ``cifarlab.data.cache`` decides when a source has to be read again.
"""

from __future__ import annotations

import codecs
import functools
import logging
import os
import pickle
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from cifarlab.data.pictures import (
    PICTURE_SUFFIXES,
    READ_ERRORS,
    PictureError,
    as_tensor,
    open_picture,
    square_rgb,
    why_unreadable,
)
from cifarlab.errors import CifarlabError
from cifarlab.utils import log, usable_cpus

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# torchvision's CIFAR-100 label names (its "meta" file), in label order: 100 fine classes and the
# 20 superclasses that group them (data.label_type=coarse)
CIFAR100_FINE = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
CIFAR100_COARSE = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)
LABEL_TYPES = {"fine": CIFAR100_FINE, "coarse": CIFAR100_COARSE}
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
# numpy's functions that rebuild a pickled array, as numpy itself names them when pickling one
# (protocols 2-4 and 5); what _BatchUnpickler admits resolves to these objects
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1, np.uint8))[0]
_FROMBUFFER = np.ndarray.__reduce_ex__(np.zeros(1, np.uint8), 5)[0]
NUMPY_CORES = ("core", "_core")  # where pickles find them: numpy.core before numpy 2


@dataclass
class ImageSet:
    """One split: images ``(N, 3, 32, 32)`` uint8, labels ``(N,)`` int64 indexing ``classes``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


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


def source_classes(source: str, root: Path, label_type: str = "fine") -> list[str]:
    """Class names of a source, in label order, without reading any image."""
    if source == "cifar10":
        return list(CIFAR10_CLASSES)
    if source == "cifar100":
        return list(LABEL_TYPES[label_type])
    return folder_classes(root)


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
    try:
        with open_picture(path) as image:
            return as_tensor(square_rgb(image, size))
    except (PictureError, *READ_ERRORS) as err:
        return f"{path} cannot be decoded ({why_unreadable(err)})"


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


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch file, admitting only the names that format uses.

    Unpickling calls whatever a file names, so a ``data_batch_1`` put into ``data.root`` could
    run any code. The real files (pickled by Python 2, read with ``encoding="latin1"``) hold a
    dict of str, lists of ints and str, and one uint8 numpy array; their only names are numpy's
    array rebuilding: ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``
    (``numpy._core`` since numpy 2). Files written again by Python 3 (tests, benchmarks) add
    ``_frombuffer`` (pickle protocol 5) or ``_codecs.encode`` (protocol 2, for bytes). Dicts,
    lists, tuples and str are opcodes of the format itself and need no name.
    """

    ADMITTED: ClassVar[dict[tuple[str, str], Any]] = {
        **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in NUMPY_CORES},
        **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in NUMPY_CORES},
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ADMITTED[module, name]
        except KeyError:
            raise _ForeignName(f"{module}.{name}") from None


class _ForeignName(pickle.UnpicklingError):
    """A name the CIFAR-10 format does not use, asked for by the pickle being read."""


def _read_batch(
    path: Path, labels_key: str = "labels", num_classes: int = 10, name: str = "CIFAR-10"
) -> dict[str, Any]:
    """One batch file as its dict, read with ``_BatchUnpickler``; anything else is refused.
    CIFAR-100's files have the same layout, with ``fine_labels`` and ``coarse_labels``."""
    folder = path.parent
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
    except _ForeignName as err:
        raise CifarlabError(
            f"{path} is not a {name} batch: its pickle asks for {err}, which that format never "
            "uses (it holds numpy arrays and lists only), and unpickling it could run code, so "
            f"it was not read. Delete {folder} to download {name} again, or point data.root at "
            "a folder with torchvision's files."
        ) from None
    except Exception as err:  # a damaged pickle fails in many ways, each to be told the same
        raise CifarlabError(
            f"{path} cannot be read as a {name} batch ({type(err).__name__}: {err}); it is "
            f"truncated or not such a file. Delete {folder} to download {name} again."
        ) from None
    data = entry.get("data") if isinstance(entry, dict) else None
    labels = entry.get(labels_key) if isinstance(entry, dict) else None
    if (
        not isinstance(data, np.ndarray)
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or not isinstance(labels, list)
        or len(labels) != len(data)
        or not all(isinstance(label, int) and 0 <= label < num_classes for label in labels)
    ):
        raise CifarlabError(
            f"{path} is not a {name} batch: it must hold 'data', an (N, 3072) array, and "
            f"'{labels_key}', N class numbers 0-{num_classes - 1}. Delete {folder} to download "
            f"{name} again."
        )
    return entry


def read_cifar10(root: Path, split: str) -> ImageSet:
    """Reads torchvision's on-disk CIFAR-10 (python pickles) without its md5 check of every load;
    ``_BatchUnpickler`` makes sure the files hold data only."""
    data, labels = [], []
    for name in CIFAR10_BATCHES[split]:
        entry = _read_batch(root / CIFAR10_DIR / name)
        data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"])
    return ImageSet(
        torch.from_numpy(np.concatenate(data)),
        torch.tensor(labels, dtype=torch.int64),
        list(CIFAR10_CLASSES),
    )


def read_cifar100(root: Path, split: str, label_type: str = "fine") -> ImageSet:
    """Reads torchvision's on-disk CIFAR-100 as ``read_cifar10`` reads CIFAR-10, with the fine
    (100 classes) or coarse (20 superclasses) labels."""
    names = LABEL_TYPES[label_type]
    data, labels = [], []
    for name in CIFAR100_FILES[split]:
        entry = _read_batch(
            root / CIFAR100_DIR / name, f"{label_type}_labels", len(names), "CIFAR-100"
        )
        data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry[f"{label_type}_labels"])
    return ImageSet(
        torch.from_numpy(np.concatenate(data)), torch.tensor(labels, dtype=torch.int64), list(names)
    )


def read_source(
    source: str,
    root: Path,
    split: str,
    classes: Sequence[str],
    label_type: str = "fine",
    image_size: int = 32,
) -> ImageSet:
    """A split decoded from its files (``classes`` as ``source_classes`` gives them)."""
    if source == "cifar10":
        return read_cifar10(root, split)
    if source == "cifar100":
        return read_cifar100(root, split, label_type)
    return read_folder(root, split, classes, image_size)


def ensure_cifar10(root: Path) -> None:
    """Downloads torchvision's CIFAR-10 into ``root`` unless its files are already there."""
    missing = [
        n
        for names in CIFAR10_BATCHES.values()
        for n in names
        if not (root / CIFAR10_DIR / n).is_file()
    ]
    if not missing:
        return
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as err:
        raise CifarlabError(
            f"CIFAR-10 is not in {root / CIFAR10_DIR} (missing {', '.join(missing)}) and the "
            f"download failed ({type(err).__name__}: {err}). Either run once with network access, "
            "or put the extracted cifar-10-python.tar.gz (from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html) into {root}, or use images on disk "
            "with data.source=folder data.root=PATH (train/<class>/*.jpg, test/<class>/*.jpg)."
        ) from None


def ensure_cifar100(root: Path) -> None:
    """Downloads torchvision's CIFAR-100 into ``root`` unless its files are already there."""
    missing = [
        n
        for names in CIFAR100_FILES.values()
        for n in names
        if not (root / CIFAR100_DIR / n).is_file()
    ]
    if not missing:
        return
    from torchvision.datasets import CIFAR100

    try:
        CIFAR100(str(root), train=True, download=True)
    except Exception as err:
        raise CifarlabError(
            f"CIFAR-100 is not in {root / CIFAR100_DIR} (missing {', '.join(missing)}) and the "
            f"download failed ({type(err).__name__}: {err}). Either run once with network access, "
            "or put the extracted cifar-100-python.tar.gz (from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html) into {root}."
        ) from None
