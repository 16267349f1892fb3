"""CIFAR-10 as one uint8 tensor per split: decoded once, cached on disk, served in whole-batch
slices that are augmented and normalized on the model's device.

- ``sources``: reading CIFAR-10's pickles and folders of images into tensors (``ImageSet``);
- ``pictures``: one picture file, any mode Pillow opens, as 8-bit RGB (also for predict.py);
- ``cache``: the on-disk cache of decoded splits (``load_split``, fingerprint, checksum);
- ``augment``: what a training batch goes through (``Augment``) and the crop/flip operations;
- ``batches``: ``TensorBatches``, an epoch's draws and the normalization (``NORMALIZATIONS``);
- ``datamodule``: ``CIFAR10DataModule``, the run's splits and the loaders Lightning asks for.
"""

from cifarlab.data.augment import AUGMENTATIONS, Augment, pad_images, parse_augment
from cifarlab.data.batches import NORMALIZATIONS, TensorBatches
from cifarlab.data.cache import CACHE_VERSION, cache_path, load_split
from cifarlab.data.datamodule import CIFAR10DataModule, class_mixed_order
from cifarlab.data.sources import CIFAR10_CLASSES, ImageSet

__all__ = [
    "AUGMENTATIONS",
    "CACHE_VERSION",
    "CIFAR10_CLASSES",
    "NORMALIZATIONS",
    "Augment",
    "CIFAR10DataModule",
    "ImageSet",
    "TensorBatches",
    "cache_path",
    "class_mixed_order",
    "load_split",
    "pad_images",
    "parse_augment",
]
