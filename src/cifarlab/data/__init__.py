"""CIFAR-10 as one uint8 tensor per split: decoded once, cached on disk, served in whole-batch
slices that are augmented and normalized on the model's device.

- ``sources``: which source a run reads, and a split of it as tensors (``ImageSet``), from
  ``cifar`` (torchvision's CIFAR-10/100 pickles) or ``folders`` (a folder of images per class);
- ``pictures``: one picture file, any mode Pillow opens, as 8-bit RGB (also for predict.py);
- ``cache``: the on-disk cache of decoded splits (``load_split``, fingerprint, checksum);
- ``splits``: the held-out validation split, a subset of classes, an order that mixes them;
- ``augment``: what a training batch goes through (``Augment``) and the crop/flip operations;
- ``normalization``: pixels to the network's inputs and back (``NORMALIZATIONS``);
- ``batches``: ``TensorBatches``, an epoch's draws sliced into normalized batches;
- ``batch_aug``: cutout, mixup and cutmix of whole training batches on their device;
- ``datamodule``: ``CIFAR10DataModule``, the run's splits and the loaders Lightning asks for.
"""

from cifarlab.data.augment import AUGMENTATIONS, Augment, pad_images, parse_augment
from cifarlab.data.batches import TensorBatches
from cifarlab.data.cache import CACHE_VERSION, cache_path, load_split
from cifarlab.data.cifar import CIFAR10_CLASSES
from cifarlab.data.datamodule import CIFAR10DataModule
from cifarlab.data.image_set import ImageSet
from cifarlab.data.normalization import NORMALIZATIONS
from cifarlab.data.splits import class_mixed_order

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
