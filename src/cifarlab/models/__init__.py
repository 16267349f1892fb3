"""The model registry: each network by its config name (conf/model/<name>.yaml), built by
``build_model``. Every network returns logits, takes a ``width`` and (N, 3, S, S) inputs, S the
run's ``data.image_size`` (32 by default): the nets with a flattening linear layer (lenet, fc512,
bn_cnn) size it by ``image_size``, the others pool globally and take any size.

One file per family: the reference material's three (``lenet``, ``fc512``, ``bn_cnn``), ``resnet``
(built from the reference's residual block) and ``fastnet`` (airbench-class). The widths and
options each takes are declared in cifarlab.config, which train.py checks before importing torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from cifarlab.errors import CifarlabError
from cifarlab.models.bn_cnn import BNCNN
from cifarlab.models.fastnet import FastNet
from cifarlab.models.fc512 import FC512
from cifarlab.models.lenet import LeNet
from cifarlab.models.resnet import ResNet

INPUT_SIZE = 32  # CIFAR's size, and data.image_size's default
# model config keys that say which net and how it runs, not options of the net's class
RUN_KEYS = ("name", "width", "compile")

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet": LeNet,
    "fc512": FC512,
    "bn_cnn": BNCNN,
    "fastnet": FastNet,
    "resnet": ResNet,
}


def build_model(
    name: str, num_classes: int, width: int, image_size: int = INPUT_SIZE, **options: object
) -> nn.Module:
    """Builds a model by its config name; options it does not take (a checkpoint of another
    version) are refused by name."""
    sized = "image_size" in inspect.signature(MODELS[name]).parameters
    try:
        return MODELS[name](
            num_classes=num_classes,
            width=width,
            **({"image_size": image_size} if sized else {}),
            **options,
        )
    except TypeError as err:
        raise CifarlabError(f"model={name} does not take these options: {err}.") from None


def build_from_config(
    model: Mapping[str, Any], num_classes: int, image_size: int = INPUT_SIZE
) -> nn.Module:
    """Builds the net a ``model`` config node describes (conf/model/<name>.yaml, as a run or a
    checkpoint's hyperparameters hold it): its other keys are options of the net's class."""
    options = {k: v for k, v in model.items() if k not in RUN_KEYS}
    return build_model(model["name"], num_classes, model["width"], image_size, **options)
