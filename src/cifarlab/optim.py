"""The optimizer and learning-rate schedule of the ``optimizer`` and ``scheduler`` config groups.

Parameters are grouped (weights, biases, normalization layers, Muon's conv filters) so that the
training tricks of airbench (a larger lr for BatchNorm, no decay on biases) are config values. The
schedules are all stepped once per optimizer step, as one ``LambdaLR`` with a factor per group: a
net's early parameters (fastnet's whitening bias, ``early_params()``) have their own factor, which
falls linearly to 0 over their epochs whatever the schedule of the others.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cifarlab.muon import MuonSGD

if TYPE_CHECKING:
    import lightning as L

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
# torch's OneCycleLR defaults, which scheduler=onecycle keeps: start at peak/25, end at start/1e4
ONECYCLE_START, ONECYCLE_END = 1 / 25, 1 / 25 / 1e4


def param_groups(net: nn.Module, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The net's parameters in up to five groups: weights, biases, normalization layers, (for
    ``optimizer=muon``) conv filters, and the net's early parameters.

    ``norm_lr_mult`` multiplies the learning rate of normalization-layer parameters (airbench gives
    BatchNorm biases 64x), ``bias_lr_mult`` that of the other biases; their weight decay is divided
    by the same factor, so that the decay per step (lr x weight_decay, in SGD and AdamW alike)
    stays that of the other weights. ``no_decay_norm_bias`` takes weight decay off biases and
    normalization layers. Under Muon, trainable 4D weights (conv filters) form their own group
    with ``muon_lr`` and ``muon_momentum``. A net with ``early_params()`` (fastnet's whitening
    bias) has them in a last group, marked with the epochs over which :func:`build_optimization`
    takes their lr to 0; they are biases, so they get the biases' lr and weight decay.
    """
    lr, wd = cfg["lr"], cfg.get("weight_decay", 0.0)
    norm_mult, bias_mult = cfg.get("norm_lr_mult", 1.0), cfg.get("bias_lr_mult", 1.0)
    no_decay = bool(cfg.get("no_decay_norm_bias", False))
    muon = cfg.get("name") == "muon"
    early, early_epochs = net.early_params() if hasattr(net, "early_params") else ([], 0)
    early_ids = {id(param) for param in early}
    weights: list[nn.Parameter] = []
    filters: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    norms: list[nn.Parameter] = []
    for module in net.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in early_ids:
                continue
            if isinstance(module, NORM_LAYERS):
                norms.append(param)
            elif name == "bias":
                biases.append(param)
            elif muon and param.ndim == 4 and param.requires_grad:
                filters.append(param)
            else:
                weights.append(param)
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


def lr_factor(name: str, cfg: dict[str, Any], step: int, total: int) -> float:
    """The learning rate at ``step`` of ``total`` as a fraction of optimizer.lr.

    ``none``: 1 throughout.
    ``cosine``: linear warm-up from 0 over ``warmup_pct`` of the steps, then cosine decay to 0.
    ``triangular`` (airbench): linear from ``start`` to 1 at ``peak_pct``, then linear to ``end``.
    ``onecycle``: torch's ``OneCycleLR`` with linear annealing, step for step: from 1/25 up to 1
    at step ``pct_start * total - 1``, then down to 1/25/1e4 at the last step, ``total - 1``.
    """
    if name == "none":
        return 1.0
    if name == "onecycle":
        peak, step = cfg.get("pct_start", 0.25) * total - 1, min(step, total - 1)
        if step <= peak and peak > 0:
            return ONECYCLE_START + (1.0 - ONECYCLE_START) * step / peak
        fall = total - 1 - peak  # steps from the peak to the last; none: the run is the peak
        return 1.0 + (ONECYCLE_END - 1.0) * (step - peak) / fall if fall > 0 else 1.0
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


def early_lr_factor(step: int, early_steps: int) -> float:
    """The lr factor of a net's early parameters: from 1 at step 0 linearly to 0 at
    ``early_steps``, then 0 (airbench94_muon's whitening-bias schedule). With lr 0, SGD, AdamW
    and Muon's SGD groups leave a parameter as it is, weight decay included (decay is scaled by
    the lr in all three)."""
    return max(0.0, 1.0 - step / early_steps) if early_steps > 0 else 0.0


def optimizer_steps_per_epoch(trainer: L.Trainer) -> int:
    """The optimizer steps of one training epoch: Lightning steps after every
    ``accumulate_grad_batches`` batches and after an epoch's last batch. Loads the training data
    when it is not loaded yet, as ``Trainer.estimated_stepping_batches`` does."""
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()
    return math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)


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


def build_optimization(
    net: nn.Module,
    optimizer_cfg: dict[str, Any],
    scheduler_cfg: dict[str, Any] | None,
    total_steps: Callable[[], int],
    steps_per_epoch: Callable[[], int],
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns: the optimizer, with its per-step
    schedule when there is one (``scheduler`` other than none, or a net with early parameters).

    The schedule is one ``LambdaLR`` with a factor per parameter group, so that a checkpoint's
    step count resumes every group where it was. ``total_steps`` is asked only by a schedule
    that needs it, ``steps_per_epoch`` only for a net with early parameters.
    """
    optimizer = build_optimizer(net, optimizer_cfg)
    cfg = scheduler_cfg or {"name": "none"}
    name = cfg.get("name", "none")
    if name == "none" and not any(EARLY_EPOCHS in group for group in optimizer.param_groups):
        return optimizer
    total = total_steps() if name != "none" else 0
    factors: list[Callable[[int], float]] = []
    for group in optimizer.param_groups:
        if EARLY_EPOCHS in group:
            early_steps = group[EARLY_EPOCHS] * steps_per_epoch()
            factors.append(functools.partial(early_lr_factor, early_steps=early_steps))
        else:
            factors.append(functools.partial(lr_factor, name, cfg, total=total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
