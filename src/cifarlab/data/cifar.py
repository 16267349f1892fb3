"""torchvision's CIFAR-10 and CIFAR-100 on disk: their class names, their pickled batches read
without running code, and the download when they are missing."""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from cifarlab.data.image_set import ImageSet
from cifarlab.errors import CifarlabError

_CIFAR10_TEXT = "airplane automobile bird cat deer dog frog horse ship truck"
CIFAR10_CLASSES = tuple(_CIFAR10_TEXT.split())
# torchvision's CIFAR-100 label names (its "meta" file), in label order: 100 fine classes and the
# 20 superclasses that group them (data.label_type=coarse)
_CIFAR100_FINE_TEXT = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
"""
CIFAR100_FINE = tuple(_CIFAR100_FINE_TEXT.split())
_CIFAR100_COARSE_TEXT = """
aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices
household_furniture insects large_carnivores large_man-made_outdoor_things
large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals
non-insect_invertebrates people reptiles small_mammals trees vehicles_1 vehicles_2
"""
CIFAR100_COARSE = tuple(_CIFAR100_COARSE_TEXT.split())
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


def _ensure(root: Path, folder: str, files: dict[str, list[str]], name: str, other: str) -> None:
    """Downloads torchvision's data set ``name`` (``CIFAR-10``, ``CIFAR-100``) into ``root`` unless
    its ``files`` are already in ``root / folder``; ``other`` ends the message with another way."""
    missing = [n for names in files.values() for n in names if not (root / folder / n).is_file()]
    if not missing:
        return
    from torchvision.datasets import CIFAR10, CIFAR100

    dataset = {"CIFAR-10": CIFAR10, "CIFAR-100": CIFAR100}[name]
    try:
        dataset(str(root), train=True, download=True)
    except Exception as err:
        raise CifarlabError(
            f"{name} is not in {root / folder} (missing {', '.join(missing)}) and the "
            f"download failed ({type(err).__name__}: {err}). Either run once with network access, "
            f"or put the extracted {name.lower()}-python.tar.gz (from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html) into {root}{other}."
        ) from None


def ensure_cifar10(root: Path) -> None:
    """Downloads torchvision's CIFAR-10 into ``root`` unless its files are already there."""
    _ensure(
        root,
        CIFAR10_DIR,
        CIFAR10_BATCHES,
        "CIFAR-10",
        ", or use images on disk with data.source=folder data.root=PATH (train/<class>/*.jpg, "
        "test/<class>/*.jpg)",
    )


def ensure_cifar100(root: Path) -> None:
    """Downloads torchvision's CIFAR-100 into ``root`` unless its files are already there."""
    _ensure(root, CIFAR100_DIR, CIFAR100_FILES, "CIFAR-100", "")
