"""CIFAR-10 as one uint8 tensor: decoded once, cached on disk, served in whole-batch slices.

Per-image Python (PIL transforms in a DataLoader) costs more than a small model's forward pass on a
CPU. Here every split is a single ``(N, 3, 32, 32)`` uint8 tensor; a batch is an index slice of it,
augmented and normalized as one tensor operation, on whatever device the model lives on.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image

from cifarlab.errors import CifarlabError
from cifarlab.utils import write_atomic

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
NORMALIZATIONS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
AUGMENTATIONS = {
    "none": (False, False),
    "flip": (False, True),
    "crop": (True, False),
    "crop_flip": (True, True),
}
SOURCES = ("cifar10", "folder")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
CACHE_VERSION = 3  # 2: scandir fingerprint; 3: plus a checksum of the tensors
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_DIR = "cifar-10-batches-py"


@dataclass
class ImageSet:
    """One split: images ``(N, 3, 32, 32)`` uint8, labels ``(N,)`` int64 indexing ``classes``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def folder_classes(root: Path) -> list[str]:
    train = root / "train"
    if not train.is_dir():
        raise CifarlabError(
            f"data.source=folder expects a folder {train} with one subfolder of images per class "
            f"(and {root / 'test'} alike), but {train} does not exist. Point data.root at a folder "
            "shaped like train/<class>/*.jpg and test/<class>/*.jpg, e.g. the unpacked "
            "cifar10-jpg/ archive."
        )
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise CifarlabError(f"{train} holds no class subfolders; expected train/<class>/<images>.")
    return classes


def source_classes(source: str, root: Path) -> list[str]:
    """Class names of a source, in label order, without reading any image."""
    return list(CIFAR10_CLASSES) if source == "cifar10" else folder_classes(root)


def cache_path(source: str, root: Path, split: str) -> Path:
    folder = root / CIFAR10_DIR if source == "cifar10" else root / ".cifarlab-cache"
    return folder / f"cifarlab-{split}-v{CACHE_VERSION}.pt"


def _scan_folder(root: Path, split: str, classes: Sequence[str]) -> list[tuple[os.DirEntry, int]]:
    """The image files of a split with their labels, sorted by name within each class.

    ``os.scandir`` rather than ``pathlib``: 60,000 files are listed and stat-ed on every start to
    check the cache, and that must take a fraction of a second.
    """
    files: list[tuple[os.DirEntry, int]] = []
    for label, name in enumerate(classes):
        class_dir = root / split / name
        if not class_dir.is_dir():
            raise CifarlabError(
                f"Class folder {class_dir} is missing: every class found in {root / 'train'} "
                f"({', '.join(classes)}) needs a folder of images in {root / split} too."
            )
        with os.scandir(class_dir) as entries:
            images = [
                e
                for e in entries
                if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()
            ]
        files.extend((e, label) for e in sorted(images, key=lambda e: e.name))
    if not files:
        raise CifarlabError(
            f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {root / split}/<class>/. "
            "Check data.root."
        )
    return files


def _folder_files(root: Path, split: str, classes: Sequence[str]) -> list[tuple[Path, int]]:
    return [(Path(e.path), label) for e, label in _scan_folder(root, split, classes)]


def _fingerprint(source: str, root: Path, split: str, classes: Sequence[str]) -> str:
    """Changes whenever the files a cache was built from change (names, sizes, times)."""
    digest = hashlib.sha1(f"{source}|{split}|{','.join(classes)}".encode())
    if source == "cifar10":
        for name in CIFAR10_BATCHES[split]:
            st = (root / CIFAR10_DIR / name).stat()
            digest.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    else:
        lines = []
        for entry, label in _scan_folder(root, split, classes):
            st = entry.stat()
            lines.append(f"{label}|{entry.name}|{st.st_size}|{st.st_mtime_ns}")
        digest.update("\n".join(lines).encode())
    return digest.hexdigest()


def _checksum(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A digest of the tensors themselves: torch.load does not notice flipped bytes in a file."""
    digest = hashlib.sha1(images.contiguous().numpy().data)
    digest.update(labels.contiguous().numpy().data)
    return digest.hexdigest()


def _decode_one(path: Path) -> torch.Tensor:
    try:
        image = decode_image(str(path), mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, OSError, ValueError) as err:
        raise CifarlabError(
            f"Cannot decode image {path} ({err}). Remove or replace the file."
        ) from None
    if tuple(image.shape) != (3, 32, 32):
        raise CifarlabError(
            f"Image {path} has shape {tuple(image.shape)} (channels, height, width), but every "
            "image must be a 32x32 RGB image (3, 32, 32). Convert or remove it."
        )
    return image


def _read_folder(root: Path, split: str, classes: Sequence[str]) -> ImageSet:
    files = _folder_files(root, split, classes)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = list(pool.map(_decode_one, (p for p, _ in files), chunksize=256))
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ImageSet(torch.stack(images), labels, list(classes))


def _read_cifar10(root: Path, split: str) -> ImageSet:
    """Reads torchvision's on-disk CIFAR-10 (python pickles) without its md5 check of every load."""
    data, labels = [], []
    for name in CIFAR10_BATCHES[split]:
        with open(root / CIFAR10_DIR / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"])
    return ImageSet(
        torch.from_numpy(np.concatenate(data)),
        torch.tensor(labels, dtype=torch.int64),
        list(CIFAR10_CLASSES),
    )


def load_split(source: str, root: str | Path, split: str) -> ImageSet:
    """The split as tensors, from the on-disk cache when it matches the files, else decoded anew.

    A cache that is stale, truncated, corrupt or unreadable is rebuilt rather than trusted.
    """
    root = Path(root)
    classes = source_classes(source, root)
    fingerprint = _fingerprint(source, root, split, classes)
    path = cache_path(source, root, split)
    if path.exists():
        try:
            cached = torch.load(path, weights_only=True)
            if cached["fingerprint"] == fingerprint and cached["checksum"] == _checksum(
                cached["images"], cached["labels"]
            ):
                return ImageSet(cached["images"], cached["labels"], list(cached["classes"]))
        except Exception:
            pass
    data = _read_cifar10(root, split) if source == "cifar10" else _read_folder(root, split, classes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "fingerprint": fingerprint,
            "checksum": _checksum(data.images, data.labels),
            "images": data.images,
            "labels": data.labels,
            "classes": data.classes,
        }
        write_atomic(path, lambda tmp: torch.save(payload, tmp))
    except OSError:
        pass  # a read-only data folder still trains; it just decodes again next time
    return data


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


def crop_flip_windows(
    images: torch.Tensor,
    *,
    crop: bool,
    flip: bool,
    pad: int = 4,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Every crop (zero padding ``pad``) of every image and of its mirror image, as one view.

    The result has shape ``(mirror, n, c, dy, dx, h, w)`` and shares memory with one padded (and,
    with ``flip``, one mirrored) copy of ``images``, passed through ``prepare`` (e.g. normalization)
    once: indexing it with one ``(mirror, image, dy, dx)`` draw per image copies each output pixel
    once, with no per-pixel index tensors.
    """
    n, c, h, w = images.shape
    pad = pad if crop else 0
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    if prepare is not None:
        padded = prepare(padded)
    views = torch.stack([padded, padded.flip(-1)]) if flip else padded.unsqueeze(0)
    st = views.stride()
    k = 2 * pad + 1
    return views.as_strided((len(views), n, c, k, k, h, w), (*st[:4], st[4], st[3], st[4]))


def sample_windows(
    windows: torch.Tensor, idx: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """One random crop/mirror of each image ``idx`` from the views of ``crop_flip_windows``."""
    n, k = len(idx), windows.shape[3]
    dy = torch.randint(0, k, (n,), generator=generator)
    dx = torch.randint(0, k, (n,), generator=generator)
    mirrored = torch.rand(n, generator=generator) < 0.5
    mirrored = mirrored.long() if len(windows) == 2 else torch.zeros_like(dy)
    draws = [t.to(windows.device) for t in (mirrored, dy, dx)]
    return windows[draws[0], idx, :, draws[1], draws[2]]


class TensorBatches:
    """Batches of ``(normalized float images, labels)`` sliced from tensors on the model's device.

    Shuffling and augmentation draw from a generator seeded by ``(seed, epoch)``, so an epoch's
    batches are the same however the run got there (fresh, or resumed from a checkpoint). With
    ``world_size > 1`` each rank takes every ``world_size``-th item of the same permutation.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        shuffle: bool = False,
        augment: str = "none",
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.crop, self.flip = AUGMENTATIONS[augment]
        self._windows: torch.Tensor | None = None
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels to ``(x / 255 - mean) / std`` as one fused multiply-add."""
        return torch.addcmul(self.shift, images.float(), self.scale)

    def _indices(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=generator)
            order = order[: n - n % self.world_size]  # equal shard sizes keep DDP ranks in step
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.labels)
        if self.shuffle:
            n -= n % self.world_size
        shard = len(range(self.rank, n, self.world_size))
        return math.ceil(shard / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch())
        order = self._indices(generator).to(self.images.device)
        augment = self.crop or self.flip
        if self._windows is None:
            # normalized (and padded and mirrored) once for the whole split: a batch is one gather
            self._windows = crop_flip_windows(
                self.images, crop=self.crop, flip=self.flip, prepare=self.normalize
            )
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if augment:
                x = sample_windows(self._windows, idx, generator)
            else:
                x = self._windows[0, idx, :, 0, 0]
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]


def normalize_augment(augment: bool | str | None) -> str:
    """Maps the config value of ``data.augment`` onto a key of ``AUGMENTATIONS``."""
    if augment is True:
        return "crop_flip"
    if augment is False or augment is None:
        return "none"
    if augment not in AUGMENTATIONS:
        raise CifarlabError(
            f"data.augment={augment!r} is not known; use true (random crop + flip), false, "
            f"or one of {', '.join(AUGMENTATIONS)}."
        )
    return augment


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 (or any folder of 32x32 RGB images per class) as whole-tensor batches.

    The validation split is carved from the full training set by ``split_seed`` before any class
    filter, so the same images are held out in every run and every subset of classes.
    """

    def __init__(
        self,
        source: str = "cifar10",
        root: str = "data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        classes: Sequence[str] | None = None,
        augment: bool | str = False,
        normalize: str = "cifar10",
        split_seed: int = 0,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise CifarlabError(
                f"data.source={source!r} is not known; use data.source=cifar10 (torchvision's "
                "download) or data.source=folder data.root=PATH (train/<class>/*, test/<class>/*)."
            )
        if normalize not in NORMALIZATIONS:
            raise CifarlabError(
                f"data.normalize={normalize!r} is not known; use one of "
                f"{', '.join(NORMALIZATIONS)} (CIFAR-10's per-channel statistics, or the "
                "tutorial's 0.5)."
            )
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value <= 0:
                raise CifarlabError(f"data.{name}={value!r} must be a positive integer.")
        if not isinstance(val_size, int) or val_size < 0:
            raise CifarlabError(f"data.val_size={val_size!r} must be a whole number >= 0.")
        self.source, self.root = source, Path(root)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.seed = val_size, split_seed, seed
        self.augment = normalize_augment(augment)
        self.normalize = normalize
        self.mean, self.std = NORMALIZATIONS[normalize]
        self.channels_last = channels_last
        self.requested_classes = list(classes) if classes is not None else None
        self.save_hyperparameters()
        self.splits: dict[str, ImageSet] = {}
        self._loaded: dict[str, ImageSet] = {}
        self._on_device: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def all_classes(self) -> list[str]:
        return source_classes(self.source, self.root)

    @property
    def class_names(self) -> list[str]:
        """The classes this run trains on, in label order (a subset keeps the source's order)."""
        available = self.all_classes
        if self.requested_classes is None:
            return available
        wanted = self.requested_classes
        unknown = [c for c in wanted if c not in available]
        if unknown:
            raise CifarlabError(
                f"data.classes names {unknown}, which the data does not have. Available classes: "
                f"{', '.join(available)}."
            )
        duplicates = sorted({c for c in wanted if wanted.count(c) > 1})
        if duplicates:
            raise CifarlabError(f"data.classes lists {duplicates} more than once; name each once.")
        if len(wanted) < 2:
            raise CifarlabError(
                f"data.classes={wanted} has {len(wanted)} class; a classifier needs at least 2, "
                "e.g. data.classes=[airplane,bird]."
            )
        return [c for c in available if c in wanted]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        if self.source == "cifar10":
            ensure_cifar10(self.root)
        for split in ("train", "test"):
            self._loaded[split] = load_split(self.source, self.root, split)

    def _load(self, split: str) -> ImageSet:
        """The split as prepare_data left it in this process, else from the cache (other ranks)."""
        if split not in self._loaded:
            self._loaded[split] = load_split(self.source, self.root, split)
        return self._loaded.pop(split)

    def _subset(self, data: ImageSet, keep: torch.Tensor) -> ImageSet:
        names = self.class_names
        remap = torch.full((len(data.classes),), -1, dtype=torch.int64)
        for new, name in enumerate(names):
            remap[data.classes.index(name)] = new
        labels = remap[data.labels[keep]]
        selected = labels >= 0
        return ImageSet(data.images[keep][selected], labels[selected], names)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train = self._load("train")
        if self.val_size >= len(train.labels):
            raise CifarlabError(
                f"data.val_size={self.val_size} leaves no training images: the training set has "
                f"{len(train.labels)} images. Choose data.val_size below that (default 5000)."
            )
        order = torch.randperm(
            len(train.labels), generator=torch.Generator().manual_seed(self.split_seed)
        )
        n_train = len(order) - self.val_size
        test = self._load("test")
        self.splits = {
            "train": self._subset(train, order[:n_train].sort().values),
            "val": self._subset(train, order[n_train:].sort().values),
            "test": self._subset(test, torch.arange(len(test.labels))),
        }

    def normalized_train_images(self, n: int) -> torch.Tensor:
        """The first ``n`` training images as normalized float, for layers computed from data."""
        images = self.splits["train"].images[:n].float() / 255.0
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (images - mean) / std

    def _tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The split on the model's device, moved there once rather than batch by batch."""
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        key = (split, str(device))
        if key not in self._on_device:
            data = self.splits[split]
            self._on_device[key] = (data.images.to(device), data.labels.to(device))
        return self._on_device[key]

    def _batches(self, split: str, batch_size: int, train: bool) -> TensorBatches:
        images, labels = self._tensors(split)
        trainer = self.trainer
        return TensorBatches(
            images,
            labels,
            batch_size,
            self.mean,
            self.std,
            shuffle=train,
            augment=self.augment if train else "none",
            seed=self.seed,
            epoch=(lambda: trainer.current_epoch) if trainer else (lambda: 0),
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            channels_last=self.channels_last,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", self.batch_size, train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", self.eval_batch_size, train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size, train=False)
