"""The optimizer of the ``optimizer`` config group, over the net's parameters in groups.

Parameters are grouped (weights, biases, normalization layers, Muon's conv filters, the net's early
parameters) so that the training tricks of airbench (a larger lr for BatchNorm, no decay on
biases) are config values; cifarlab.training.schedules gives every group its learning-rate factor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cifarlab.training.muon import MuonSGD

NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)
# the group key of a net's early parameters: the epochs over which their lr falls linearly to 0
EARLY_EPOCHS = "early_epochs"


def _sort_params(
    net: nn.Module, muon: bool, early: set[int]
) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """The net's parameters (those in ``early`` by id left out) as weights, conv filters (only
    under Muon: trainable 4D weights), biases and normalization-layer parameters."""
    weights: list[nn.Parameter] = []
    filters: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    norms: list[nn.Parameter] = []
    for module in net.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in early:
                continue
            if isinstance(module, NORM_LAYERS):
                norms.append(param)
            elif name == "bias":
                biases.append(param)
            elif muon and param.ndim == 4 and param.requires_grad:
                filters.append(param)
            else:
                weights.append(param)
    return weights, filters, biases, norms


def param_groups(net: nn.Module, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The net's parameters in up to five groups: weights, biases, normalization layers, (for
    ``optimizer=muon``) conv filters, and the net's early parameters.

    ``norm_lr_mult`` multiplies the learning rate of normalization-layer parameters (airbench gives
    BatchNorm biases 64x), ``bias_lr_mult`` that of the other biases; their weight decay is divided
    by the same factor, so that the decay per step (lr x weight_decay, in SGD and AdamW alike)
    stays that of the other weights. ``no_decay_norm_bias`` takes weight decay off biases and
    normalization layers. Under Muon, trainable 4D weights (conv filters) form their own group
    with ``muon_lr`` and ``muon_momentum``. A net with ``early_params()`` (fastnet's whitening
    bias) has them in a last group, marked with the epochs over which
    cifarlab.training.schedules takes their lr to 0; they are biases, so they get the biases'
    lr and weight decay.
    """
    lr, wd = cfg["lr"], cfg.get("weight_decay", 0.0)
    norm_mult, bias_mult = cfg.get("norm_lr_mult", 1.0), cfg.get("bias_lr_mult", 1.0)
    no_decay = bool(cfg.get("no_decay_norm_bias", False))
    early, early_epochs = net.early_params() if hasattr(net, "early_params") else ([], 0)
    weights, filters, biases, norms = _sort_params(
        net, cfg.get("name") == "muon", {id(param) for param in early}
    )
    bias_decay = 0.0 if no_decay else wd / bias_mult
    groups = [
        {"params": weights, "lr": lr, "weight_decay": wd},
        {"params": biases, "lr": lr * bias_mult, "weight_decay": bias_decay},
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
    groups.append(
        {
            "params": list(early),
            "lr": lr * bias_mult,
            "weight_decay": bias_decay,
            EARLY_EPOCHS: early_epochs,
        }
    )
    return [group for group in groups if group["params"]]


def build_optimizer(net: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """The configured optimizer over ``param_groups(net, cfg)`` (cifarlab.config declares its
    keys)."""
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


def resume_problem(
    checkpoint: dict[str, Any], net: nn.Module, optimizer_cfg: dict[str, Any]
) -> str | None:
    """Why training cannot continue from ``checkpoint``'s optimizer and schedule state with this
    version's parameter groups and schedule, or None when it can.

    Another version of cifarlab may have grouped the parameters differently or kept the schedule
    in another class; torch would then fail deep inside ``load_state_dict``. The weights of such a
    checkpoint still load (eval.py, predict.py, export.py): only the training state differs.
    """
    stored = checkpoint.get("optimizer_states") or []
    if stored:
        sizes = [len(group["params"]) for group in stored[0].get("param_groups", [])]
        expected = [len(group["params"]) for group in param_groups(net, optimizer_cfg)]
        if sizes != expected:
            return (
                f"its optimizer state has parameter groups of {sizes} parameters, where this "
                f"version makes groups of {expected}"
            )
    for state in checkpoint.get("lr_schedulers") or []:
        if not isinstance(state, dict) or "lr_lambdas" not in state:
            return (
                "its learning-rate schedule was saved by another scheduler class than the one "
                "LambdaLR this version keeps (a factor per parameter group)"
            )
    return None
