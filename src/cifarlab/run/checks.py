"""Checks of config values that need no heavy library, so a mistake is reported in a second.

The entry points run them before importing Lightning, torchmetrics or torchvision; the code that
builds the objects (``cifarlab.optim.build_optimizer``) calls the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cifarlab.errors import CifarlabError

OPTIMIZERS = ("sgd", "adamw", "muon")
# the names of cifarlab.models.MODELS, known here without importing torch
MODEL_NAMES = ("lenet", "fc512", "bn_cnn", "resnet", "fastnet")


def check_optimizer(cfg: Mapping[str, Any]) -> None:
    name, lr = cfg.get("name"), cfg.get("lr")
    if name not in OPTIMIZERS:
        raise CifarlabError(
            f"optimizer={name!r} is not known; choose one of {', '.join(OPTIMIZERS)}."
        )
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or math.isinf(lr):
        raise CifarlabError(f"optimizer.lr={lr!r} must be a positive number, e.g. 0.01.")
    for key in ("norm_lr_mult", "bias_lr_mult"):
        mult = cfg.get(key, 1.0)
        if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not mult > 0:
            raise CifarlabError(f"optimizer.{key}={mult!r} must be a positive number, e.g. 64.")
    if name == "muon":
        muon_lr, muon_momentum = cfg.get("muon_lr"), cfg.get("muon_momentum")
        if isinstance(muon_lr, bool) or not isinstance(muon_lr, (int, float)) or not muon_lr > 0:
            raise CifarlabError(
                f"optimizer.muon_lr={muon_lr!r} must be a positive number, e.g. 0.24 "
                "(the step for conv filters; optimizer.lr is the SGD rate of the other weights)."
            )
        if not isinstance(muon_momentum, (int, float)) or not 0 <= muon_momentum < 1:
            raise CifarlabError(
                f"optimizer.muon_momentum={muon_momentum!r} must be a number in [0, 1), e.g. 0.6."
            )


def check_model(cfg: Mapping[str, Any]) -> None:
    """The model's name, width and generic options (``build_model`` runs the same checks)."""
    name, width = cfg.get("name"), cfg.get("width")
    if name not in MODEL_NAMES:
        raise CifarlabError(
            f"model={name!r} is not known; choose one of {', '.join(MODEL_NAMES)} "
            "(e.g. model=lenet)."
        )
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise CifarlabError(f"model.width={width!r} must be a positive whole number.")
    if name == "bn_cnn" and (width < 2 or width % 2):
        raise CifarlabError(
            f"model.width={width} does not fit bn_cnn: its second conv has width/2 channels, so "
            "the width must be even and at least 2 (e.g. 16, 32, 64)."
        )
    dropout = cfg.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise CifarlabError(f"model.dropout={dropout!r} must be a number in [0, 1).")
    if not isinstance(cfg.get("batchnorm", True), bool):
        raise CifarlabError(f"model.batchnorm={cfg['batchnorm']!r} must be true or false.")
    bias_epochs = cfg.get("whiten_bias_epochs", 0)
    if isinstance(bias_epochs, bool) or not isinstance(bias_epochs, int) or bias_epochs < 0:
        raise CifarlabError(
            f"model.whiten_bias_epochs={bias_epochs!r} must be a whole number >= 0, e.g. 3: the "
            "epochs over which the whitening bias's learning rate falls linearly to 0."
        )
