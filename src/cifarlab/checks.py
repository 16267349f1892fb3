"""Checks of config values that need no heavy library, so a mistake is reported in a second.

The entry points run them before importing Lightning, torchmetrics or torchvision; the code that
builds the objects (``cifarlab.module.build_optimizer``) calls the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cifarlab.errors import CifarlabError

OPTIMIZERS = ("sgd", "adamw")


def check_optimizer(cfg: Mapping[str, Any]) -> None:
    name, lr = cfg.get("name"), cfg.get("lr")
    if name not in OPTIMIZERS:
        raise CifarlabError(
            f"optimizer={name!r} is not known; choose one of {', '.join(OPTIMIZERS)}."
        )
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or math.isinf(lr):
        raise CifarlabError(f"optimizer.lr={lr!r} must be a positive number, e.g. 0.01.")
    mult = cfg.get("norm_lr_mult", 1.0)
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not mult > 0:
        raise CifarlabError(f"optimizer.norm_lr_mult={mult!r} must be a positive number, e.g. 64.")
