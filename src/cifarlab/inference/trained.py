"""A trained network out of a train.py checkpoint, with what it takes to feed it (predict.py,
export.py).

A checkpoint holds the whole ``ClassifierModule``; people who use a trained model want the
``nn.Module`` alone, its class names and the normalization its inputs need. Everything is rebuilt
from the checkpoint's own hyperparameters, so this works for every model in
``cifarlab.models.MODELS`` without knowing any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cifarlab.data.normalization import NORMALIZATIONS, normalize
from cifarlab.errors import CifarlabError
from cifarlab.models import build_from_config
from cifarlab.run.checkpoints import load_checkpoint


@dataclass
class Network:
    """A checkpoint's network in eval mode on the CPU, and how its inputs must be prepared."""

    net: nn.Module
    model: dict[str, Any]
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalize: str
    image_size: int = 32  # the run's data.image_size: the side of the square inputs

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) uint8 RGB -> the normalized float batch the network was trained on."""
        return normalize(images, self.mean, self.std)


def load_network(ckpt_path: str | None, purpose: str) -> Network:
    """Rebuilds the network of a train.py checkpoint from its hyperparameters and weights.

    Only names chosen from this project's registries are read from the file (the model's name in
    ``cifarlab.models.MODELS``, the normalization's in ``NORMALIZATIONS``); its stored run config
    is not used, so nothing in it runs.
    """
    ckpt = load_checkpoint(ckpt_path, purpose=purpose)
    hparams = ckpt["hyper_parameters"]
    model = dict(hparams["model"])
    class_names = list(hparams["class_names"])
    image_size = int((hparams.get("data") or {}).get("image_size", 32))
    net = build_from_config(model, len(class_names), image_size)
    weights = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise CifarlabError(
            f"ckpt_path={ckpt_path}: its weights do not fit model={model['name']} "
            f"width={model['width']} as this version of cifarlab builds it ({err}). Use the "
            "cifarlab version that trained it."
        ) from None
    normalize = (hparams.get("data") or {}).get("normalize", "cifar10")
    if normalize not in NORMALIZATIONS:
        raise CifarlabError(
            f"ckpt_path={ckpt_path} was written by another version of cifarlab: its inputs were "
            f"normalized with {normalize!r}, which this version does not know (it knows "
            f"{', '.join(NORMALIZATIONS)}). Use the cifarlab version that trained it."
        )
    mean, std = NORMALIZATIONS[normalize]
    return Network(net.eval(), model, class_names, mean, std, normalize, image_size)
