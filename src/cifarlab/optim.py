"""The optimizer and learning-rate schedule of the ``optimizer`` and ``scheduler`` config groups.

Parameters are grouped (weights, biases, normalization layers, Muon's conv filters) so that the
training tricks of airbench (a larger lr for BatchNorm, no decay on biases) are config values. The
schedules are all stepped once per optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cifarlab.checks import check_optimizer
from cifarlab.errors import CifarlabError
from cifarlab.muon import MuonSGD

SCHEDULERS = ("none", "onecycle", "cosine", "triangular")
NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


def param_groups(net: nn.Module, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The net's parameters in up to four groups: weights, biases, normalization layers, and (for
    ``optimizer=muon``) conv filters.

    ``norm_lr_mult`` multiplies the learning rate of normalization-layer parameters (airbench gives
    BatchNorm biases 64x), ``bias_lr_mult`` that of the other biases; their weight decay is divided
    by the same factor, so that the decay per step (lr x weight_decay, in SGD and AdamW alike)
    stays that of the other weights. ``no_decay_norm_bias`` takes weight decay off biases and
    normalization layers. Under Muon, trainable 4D weights (conv filters) form their own group
    with ``muon_lr`` and ``muon_momentum``.
    """
    lr, wd = cfg["lr"], cfg.get("weight_decay", 0.0)
    norm_mult, bias_mult = cfg.get("norm_lr_mult", 1.0), cfg.get("bias_lr_mult", 1.0)
    no_decay = bool(cfg.get("no_decay_norm_bias", False))
    muon = cfg.get("name") == "muon"
    weights: list[nn.Parameter] = []
    filters: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    norms: list[nn.Parameter] = []
    for module in net.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, NORM_LAYERS):
                norms.append(param)
            elif name == "bias":
                biases.append(param)
            elif muon and param.ndim == 4 and param.requires_grad:
                filters.append(param)
            else:
                weights.append(param)
    groups = [
        {"params": weights, "lr": lr, "weight_decay": wd},
        {
            "params": biases,
            "lr": lr * bias_mult,
            "weight_decay": 0.0 if no_decay else wd / bias_mult,
        },
        {
            "params": norms,
            "lr": lr * norm_mult,
            "weight_decay": 0.0 if no_decay else wd / norm_mult,
        },
    ]
    if filters:
        groups.append(
            {
                "params": filters,
                "lr": cfg["muon_lr"],
                "momentum": cfg["muon_momentum"],
                "weight_decay": 0.0,
                "muon": True,
            }
        )
    return [group for group in groups if group["params"]]


def build_optimizer(net: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """The configured optimizer over ``param_groups(net, cfg)``; a bad config is one paragraph."""
    check_optimizer(cfg)
    name, lr = cfg["name"], cfg["lr"]
    params = param_groups(net, cfg)
    if name in ("sgd", "muon"):
        optimizer_class = MuonSGD if name == "muon" else torch.optim.SGD
        return optimizer_class(
            params,
            lr=lr,
            momentum=cfg.get("momentum", 0.0),
            nesterov=cfg.get("nesterov", False),
        )
    return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))))


def lr_factor(name: str, cfg: dict[str, Any], step: int, total: int) -> float:
    """The learning rate at ``step`` of ``total`` as a fraction of optimizer.lr.

    ``cosine``: linear warm-up from 0 over ``warmup_pct`` of the steps, then cosine decay to 0.
    ``triangular`` (airbench): linear from ``start`` to 1 at ``peak_pct``, then linear to ``end``.
    """
    t = min(step, total) / max(total, 1)
    if name == "cosine":
        warmup = cfg.get("warmup_pct", 0.0)
        if t < warmup:
            return (step + 1) / (warmup * total)
        return 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (1.0 - warmup)))
    peak, start, end = cfg.get("peak_pct", 0.23), cfg.get("start", 0.2), cfg.get("end", 0.07)
    if t < peak:
        return start + (1.0 - start) * t / peak
    return 1.0 + (end - 1.0) * (t - peak) / (1.0 - peak)


def build_optimization(
    net: nn.Module,
    optimizer_cfg: dict[str, Any],
    scheduler_cfg: dict[str, Any] | None,
    total_steps: Callable[[], int],
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns: the optimizer, with its per-step
    schedule when there is one. ``total_steps`` is asked only by a schedule that needs it."""
    optimizer = build_optimizer(net, optimizer_cfg)
    cfg = scheduler_cfg or {"name": "none"}
    name = cfg.get("name", "none")
    if name not in SCHEDULERS:
        raise CifarlabError(
            f"scheduler={name!r} is not known; choose one of {', '.join(SCHEDULERS)}."
        )
    if name == "none":
        return optimizer
    total = total_steps()
    if name == "onecycle":
        scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total,
            pct_start=cfg.get("pct_start", 0.25),
            anneal_strategy="linear",
            cycle_momentum=False,
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(name, cfg, step, total)
        )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
