"""CIFAR-10 as one uint8 tensor: decoded once, cached on disk, served in whole-batch slices.

Per-image Python (PIL transforms in a DataLoader) costs more than a small model's forward pass on a
CPU. Here every split is a single ``(N, 3, 32, 32)`` uint8 tensor; a batch is an index slice of it,
augmented and normalized as one tensor operation, on whatever device the model lives on. An epoch's
random draws (order, crops, flips) are made at once on the host and reach the device in one copy
that does not wait for it, so a training step never synchronizes with the host.
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
from cifarlab.utils import log, usable_cpus, write_atomic

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
FLIP_MODES = ("random", "alternate")
PAD_MODES = ("zeros", "reflect")
# how a batch is cropped: "split" pads the whole split once (one gather per batch), "batch" pads and
# crops each batch (never holds more than a batch; MPS may copy the split path's view whole)
GATHERS = ("auto", "split", "batch")
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


def _data_cache_dir(source: str, root: Path) -> Path:
    """The cache's place next to the data (where torchvision's pickles are, for cifar10)."""
    return root / CIFAR10_DIR if source == "cifar10" else root / ".cifarlab-cache"


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


def cache_path(source: str, root: Path, split: str, cache_dir: str | Path | None = None) -> Path:
    return cache_dir_for(source, root, cache_dir) / f"cifarlab-{split}-v{CACHE_VERSION}.pt"


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
    with ThreadPoolExecutor(max_workers=usable_cpus()) as pool:
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


def class_mixed_order(labels: torch.Tensor) -> torch.Tensor:
    """A fixed order that spreads every class evenly over the split (round robin when classes are
    equally large), keeping each class's own order.

    A folder is read class by class; served that way, the first batches of a split (all that
    ``trainer.limit_val_batches`` scores) would hold one or two classes. Here every stretch of the
    split holds each class in its share, to within one image.
    """
    counts = torch.bincount(labels)
    by_class = torch.argsort(labels, stable=True)
    first_of_class = torch.cumsum(counts, 0) - counts
    place = torch.empty_like(labels)  # each image's position within its class
    place[by_class] = torch.arange(len(labels)) - first_of_class[labels[by_class]]
    share = (place.double() + 0.5) / counts[labels].double()
    return torch.from_numpy(np.lexsort((labels.numpy(), share.numpy())))


def load_split(
    source: str, root: str | Path, split: str, cache_dir: str | Path | None = None
) -> ImageSet:
    """The split as tensors, from the on-disk cache when it matches the files, else decoded anew.

    A cache that is stale, truncated, corrupt or unreadable is rebuilt rather than trusted.
    """
    root = Path(root)
    classes = source_classes(source, root)
    fingerprint = _fingerprint(source, root, split, classes)
    path = cache_path(source, root, split, cache_dir)
    # a read-only data folder may come with its cache already built
    for candidate in dict.fromkeys([path, _data_cache_dir(source, root) / path.name]):
        cached = _read_cache(candidate, fingerprint)
        if cached is not None:
            return cached
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
    except OSError as err:  # still trains; it just decodes again next time
        log.warning("Could not write the data cache %s (%s); it is decoded anew.", path, err)
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


@dataclass(frozen=True)
class Augment:
    """What a training batch goes through (``data.augment`` and the keys beside it).

    ``flip_mode="alternate"`` (as in airbench) flips a random half of the images in epoch 0 and
    then every image the other way each epoch, so each is seen both ways within two epochs.
    """

    crop: bool = False
    flip: bool = False
    padding: int = 4
    pad_mode: str = "zeros"
    flip_mode: str = "random"

    @property
    def offsets(self) -> int:
        """Crop positions per axis: ``2 * padding + 1`` when cropping, else the image itself."""
        return 2 * self.padding + 1 if self.crop else 1


def pad_images(images: torch.Tensor, pad: int, mode: str = "zeros") -> torch.Tensor:
    """``images`` ``(n, c, h, w)`` with ``pad`` pixels more on each side, same dtype and device.

    ``reflect`` mirrors at the edge without repeating it, as ``F.pad(mode="reflect")`` does; it is
    one index gather here because torch's reflection kernels do not take uint8 on every device.
    """
    if pad == 0:
        return images
    if mode == "zeros":
        return F.pad(images, (pad, pad, pad, pad))
    h, w = images.shape[-2:]
    rows, cols = (_reflected(size, pad, images.device) for size in (h, w))
    return images[:, :, rows[:, None], cols]


def _reflected(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source index of each position of a reflect-padded axis: -2 -> 2, size + 1 -> size - 3."""
    index = torch.arange(-pad, size + pad, device=device).abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def crop_each(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size``-square crop of each padded image at its own offset, by two gathers: nothing
    larger than the batch is made (the ``split`` path's overlapping view may be copied whole on
    MPS)."""
    n, c, _, width = padded.shape
    span = torch.arange(size, device=padded.device)
    rows = (dy[:, None] + span)[:, None, :, None].expand(n, c, size, width)
    x = padded.gather(2, rows)
    cols = (dx[:, None] + span)[:, None, None, :].expand(n, c, size, size)
    return x.gather(3, cols)


def window_starts(padded: torch.Tensor, size: int) -> torch.Tensor:
    """Every ``size``-square window of every padded image as one ``(positions, c, size, size)``
    view: the window whose first pixel is element ``o`` of the split is row ``o``, so image
    ``i``'s crop at ``(dy, dx)`` is row ``i * c * H * W + dy * W + dx``. One ``index_select`` of
    whole rows is several times faster on a CPU than advanced indexing by ``(i, dy, dx)``."""
    padded = padded.contiguous()
    n, c, height, width = padded.shape
    last = (n - 1) * c * height * width + (height - size) * width + (width - size)
    return padded.as_strided((last + 1, c, size, size), (1, height * width, width, 1))


def mirror_where(x: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """``x`` with the images where ``flipped`` is 1 mirrored left to right: both versions side by
    side, then one ``index_select`` (``torch.where`` with a per-image mask is much slower on a
    CPU)."""
    n = len(x)
    both = torch.cat([x, x.flip(-1)])
    return both.index_select(0, torch.arange(n, device=x.device) + flipped * n)


def _generator(*key: object) -> torch.Generator:
    """A CPU generator for ``key`` (e.g. seed, epoch, rank, purpose): a separate stream for every
    key, the same on every machine and device."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def shard_size(
    n: int, batch_size: int, rank: int, world_size: int, shuffle: bool, drop_last: bool
) -> int:
    """Images one rank gets per epoch. Shuffled shards are cut to equal sizes (DDP ranks step
    together); ``drop_last`` drops a last partial batch when there is a full one, so every step
    has the same shape (``model.compile`` would otherwise recompile for the last batch)."""
    per_rank = n // world_size if shuffle else len(range(rank, n, world_size))
    if drop_last and per_rank >= batch_size:
        per_rank -= per_rank % batch_size
    return per_rank


def epoch_draws(
    n: int,
    augment: Augment,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    drop_last: bool = False,
) -> torch.Tensor:
    """One rank's images of one epoch and their crop and flip, as a ``(4, m)`` int64 tensor with
    rows (image index, crop row offset, crop column offset, flipped), drawn on the host at once.

    The order depends on ``(seed, epoch)`` alone, so the ranks' shards are disjoint slices of one
    permutation; crops and random flips on ``(seed, epoch, rank)``, so ranks augment differently
    and a resumed epoch repeats exactly. Alternating flips start from one random flip per image,
    drawn from ``seed`` alone because the shared order moves an image between ranks.
    """
    if shuffle:
        order = torch.randperm(n, generator=_generator(seed, epoch, "order"))
        order = order[: n - n % world_size][rank::world_size]
    else:
        order = torch.arange(rank, n, world_size)
    order = order[: shard_size(n, batch_size, rank, world_size, shuffle, drop_last)]
    g = _generator(seed, epoch, rank, "augment")
    draws = torch.zeros(4, len(order), dtype=torch.int64)
    draws[0] = order
    if augment.crop:
        draws[1:3] = torch.randint(0, augment.offsets, (2, len(order)), generator=g)
    if augment.flip and augment.flip_mode == "alternate":
        first = torch.rand(n, generator=_generator(seed, "alternate flips")) < 0.5
        draws[3] = first[order] ^ bool(epoch % 2)
    elif augment.flip:
        draws[3] = torch.rand(len(order), generator=g) < 0.5
    return draws


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device`` without making the host wait. To a CUDA device a copy from pageable
    memory waits for the stream (torch's ``memcpy_and_sync``, which
    ``torch.cuda.set_sync_debug_mode`` reports); from pinned memory with ``non_blocking`` it is
    queued on the stream (``cudaMemcpyAsync``), and torch keeps the pinned block until it ran."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class TensorBatches:
    """Batches of ``(normalized float images, labels)`` sliced from tensors on the model's device.

    Each epoch's order, crops and flips come from ``epoch_draws`` in one host-to-device copy; a
    step then only indexes, flips and normalizes on the device. Images stay uint8 until a batch is
    gathered (a quarter of the memory of normalized floats); normalizing the gathered pixels gives
    the same bits as normalizing the split first. ``gather`` picks how crops are cut (``GATHERS``).
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
        augment: Augment = Augment(),
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        gather: str = "auto",
        channels_last: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.augment = augment
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        if gather == "auto":
            gather = "batch" if images.device.type == "mps" else "split"
        self.gather = gather
        self.channels_last = channels_last
        self._windows: torch.Tensor | None = None
        std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels to ``(x / 255 - mean) / std`` as one fused multiply-add (which reads the
        uint8 pixels as floats itself, a pass less than ``images.float()`` first)."""
        return torch.addcmul(self.shift, images, self.scale)

    def windows(self) -> torch.Tensor:
        """``window_starts`` of the split, padded once (uint8: 216 MB for 45,000 images with
        padding 4)."""
        if self._windows is None:
            padded = pad_images(self.images, self.augment.padding, self.augment.pad_mode)
            self._windows = window_starts(padded, self.images.shape[-1])
        return self._windows

    def batch(
        self, idx: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flipped: torch.Tensor
    ) -> torch.Tensor:
        """Images ``idx`` cropped at ``(dy, dx)`` of their padded self, mirrored where
        ``flipped``, normalized: the same bits on either gather path."""
        _, channels, size, _ = self.images.shape
        padded_size = size + 2 * self.augment.padding
        if not self.augment.crop:
            x = self.images.index_select(0, idx)
        elif self.gather == "split":
            start = (idx * channels * padded_size + dy) * padded_size + dx  # see window_starts
            x = self.windows().index_select(0, start)
        else:
            padded = self.images.index_select(0, idx)
            padded = pad_images(padded, self.augment.padding, self.augment.pad_mode)
            x = crop_each(padded, dy, dx, size)
        if self.augment.flip:
            x = mirror_where(x, flipped)
        x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __len__(self) -> int:
        n = shard_size(
            len(self.labels),
            self.batch_size,
            self.rank,
            self.world_size,
            self.shuffle,
            self.drop_last,
        )
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        draws = epoch_draws(
            len(self.labels),
            self.augment,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch(),
            rank=self.rank,
            world_size=self.world_size,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
        )
        order, dy, dx, flipped = to_device(draws, self.images.device)
        for start in range(0, len(order), self.batch_size):
            part = slice(start, start + self.batch_size)
            idx = order[part]
            yield self.batch(idx, dy[part], dx[part], flipped[part]), self.labels[idx]


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


def _check_augment_options(
    crop_padding: object, pad_mode: object, flip_mode: object, gather: object, drop_last: object
) -> None:
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
        raise CifarlabError(
            f"data.crop_padding={crop_padding!r} must be a whole number >= 0 (pixels added on "
            "each side before a random crop; 4 is the usual CIFAR-10 choice)."
        )
    choices = (("pad_mode", pad_mode, PAD_MODES), ("flip_mode", flip_mode, FLIP_MODES))
    for name, value, allowed in (*choices, ("gather", gather, GATHERS)):
        if value not in allowed:
            raise CifarlabError(
                f"data.{name}={value!r} is not known; use one of {', '.join(allowed)}."
            )
    if pad_mode == "reflect" and crop_padding >= 32:
        raise CifarlabError(
            f"data.crop_padding={crop_padding} with data.pad_mode=reflect mirrors more than the "
            "32-pixel image holds; use a padding below 32, or data.pad_mode=zeros."
        )
    if not isinstance(drop_last, bool):
        raise CifarlabError(f"data.drop_last={drop_last!r} must be true or false.")


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
        drop_last: bool = True,
        crop_padding: int = 4,
        pad_mode: str = "zeros",
        flip_mode: str = "random",
        gather: str = "auto",
        cache_dir: str | None = None,
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
        _check_augment_options(crop_padding, pad_mode, flip_mode, gather, drop_last)
        self.source, self.root = source, Path(root)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.seed = val_size, split_seed, seed
        self.augment = normalize_augment(augment)
        self.normalize = normalize
        self.mean, self.std = NORMALIZATIONS[normalize]
        self.channels_last = channels_last
        self.drop_last, self.gather, self.cache_dir = drop_last, gather, cache_dir
        crop, flip = AUGMENTATIONS[self.augment]
        self.augment_spec = Augment(crop, flip, crop_padding, pad_mode, flip_mode)
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
            self._loaded[split] = load_split(self.source, self.root, split, self.cache_dir)

    def _load(self, split: str) -> ImageSet:
        """The split as prepare_data left it in this process, else from the cache (other ranks)."""
        if split not in self._loaded:
            self._loaded[split] = load_split(self.source, self.root, split, self.cache_dir)
        return self._loaded.pop(split)

    def _subset(self, data: ImageSet, keep: torch.Tensor) -> ImageSet:
        """Images ``keep`` of the run's classes, relabelled, in ``class_mixed_order``."""
        names = self.class_names
        remap = torch.full((len(data.classes),), -1, dtype=torch.int64)
        for new, name in enumerate(names):
            remap[data.classes.index(name)] = new
        labels = remap[data.labels[keep]]
        keep, labels = keep[labels >= 0], labels[labels >= 0]
        mixed = class_mixed_order(labels)
        return ImageSet(data.images[keep[mixed]], labels[mixed], names)

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
            augment=self.augment_spec if train else Augment(),
            seed=self.seed,
            epoch=(lambda: trainer.current_epoch) if trainer else (lambda: 0),
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            drop_last=self.drop_last and train,
            gather=self.gather,
            channels_last=self.channels_last,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", self.batch_size, train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", self.eval_batch_size, train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size, train=False)
