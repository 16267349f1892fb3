"""The LightningDataModule: a run's train/val/test splits and the batches Lightning asks for.

It decides which images a run sees (the held-out validation split, a subset of classes, an order
that mixes the classes) and hands out ``TensorBatches`` on the model's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from cifarlab.data.augment import AUGMENTATIONS, NO_AUGMENT, Augment, parse_augment
from cifarlab.data.batches import TensorBatches
from cifarlab.data.cache import load_split
from cifarlab.data.cifar import ensure_cifar10, ensure_cifar100
from cifarlab.data.image_set import ImageSet
from cifarlab.data.normalization import NORMALIZATIONS, normalize
from cifarlab.data.sources import source_classes
from cifarlab.data.splits import hold_out, subset
from cifarlab.errors import CifarlabError


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10, CIFAR-100 (fine or coarse labels) or a folder of images per class as
    whole-tensor batches.

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
        label_type: str = "fine",
        image_size: int = 32,
    ) -> None:
        super().__init__()
        self.label_type, self.image_size = label_type, image_size
        self.source, self.root = source, Path(root)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.seed = val_size, split_seed, seed
        self.augmentation = parse_augment(augment)  # the AUGMENTATIONS key
        self.normalization = normalize  # the NORMALIZATIONS key; TensorBatches.normalize applies it
        self.mean, self.std = NORMALIZATIONS[normalize]
        self.channels_last = channels_last
        self.drop_last, self.gather, self.cache_dir = drop_last, gather, cache_dir
        crop, flip = AUGMENTATIONS[self.augmentation]
        self.train_augment = Augment(crop, flip, crop_padding, pad_mode, flip_mode)
        self.requested_classes = list(classes) if classes is not None else None
        self.save_hyperparameters()
        self.splits: dict[str, ImageSet] = {}
        self._prepared: dict[str, ImageSet] = {}
        self._on_device: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def all_classes(self) -> list[str]:
        return source_classes(self.source, self.root, self.label_type)

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
        """Downloads and decodes what the splits need. Lightning calls it again for every
        ``trainer.test`` after ``fit``; by then this process holds the splits, so it does
        nothing (a second decode of both splits took a second of a quick start)."""
        if self.splits:
            return
        if self.source == "cifar10":
            ensure_cifar10(self.root)
        if self.source == "cifar100":
            ensure_cifar100(self.root)
        for split in ("train", "test"):
            self._prepared[split] = self._load(split)

    def _take_split(self, split: str) -> ImageSet:
        """The split prepare_data decoded in this process, handed over once so that the module
        keeps no copy of the whole split after setup, else loaded from the cache (on the ranks that
        did not prepare the data)."""
        if split in self._prepared:
            return self._prepared.pop(split)
        return self._load(split)

    def _load(self, split: str) -> ImageSet:
        return load_split(
            self.source, self.root, split, self.cache_dir, self.label_type, self.image_size
        )

    def setup(self, stage: str | None = None) -> None:
        """Makes the splits once. With nothing to validate (``data.val_size=0``) it sets
        Lightning's own switch for no validation, ``limit_val_batches=0``, on the trainer (as
        Lightning's tuner does): the evaluation loop then never asks for a validation loader.
        Lightning warns about each other way of saying it: a loader of no batches, an empty list
        of loaders (its ``_tree_flatten`` keeps ``[]`` as one loader), or no loader at all."""
        if not self.splits:
            self.splits = self._make_splits()
        if self.trainer is not None and len(self.splits["val"].labels) == 0:
            self.trainer.limit_val_batches = 0

    def _make_splits(self) -> dict[str, ImageSet]:
        """train and val carved from the training set by ``split_seed``, and test."""
        train = self._take_split("train")
        train_idx, val_idx = hold_out(train, self.val_size, self.split_seed)
        test = self._take_split("test")
        names = self.class_names
        return {
            "train": subset(train, train_idx, names),
            "val": subset(train, val_idx, names),
            "test": subset(test, torch.arange(len(test.labels)), names),
        }

    def normalized_train_images(self, n: int) -> torch.Tensor:
        """The first ``n`` training images as normalized float, for layers computed from data."""
        return normalize(self.splits["train"].images[:n], self.mean, self.std)

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
            augment=self.train_augment if train else NO_AUGMENT,
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
