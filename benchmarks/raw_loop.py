"""The plain PyTorch training loop the benchmarks hold cifarlab against: shuffle, slice, normalize,
step. Nothing from cifarlab but the model and the decoded image tensors; AdamW with the linear
one-cycle schedule of cifarlab's defaults (``optimizer=adamw``, ``scheduler=onecycle``)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.data import NORMALIZATIONS


def _wait_for(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_epochs(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    pct_start: float,
    max_batches: int | None = None,
) -> list[float]:
    """Seconds per epoch of training ``net`` on uint8 ``images`` (on the device they are on),
    ``max_batches`` batches an epoch at most."""
    device = images.device
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in NORMALIZATIONS["cifar10"])
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    batches = -(-len(labels) // batch_size)
    if max_batches is not None:
        batches = min(batches, max_batches)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        total_steps=epochs * batches,
        pct_start=pct_start,
        anneal_strategy="linear",
        cycle_momentum=False,
    )
    times = []
    for _ in range(epochs):
        _wait_for(device)
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(labels), device=device)
        for idx in order.split(batch_size)[:batches]:
            x = (images[idx].float() / 255 - mean) / std
            loss = F.cross_entropy(net(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        _wait_for(device)
        times.append(time.perf_counter() - start)
    return times
