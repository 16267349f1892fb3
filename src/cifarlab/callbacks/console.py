"""What a run shows on the console: a summary of the network itself (parameters and FLOPs) and a
progress bar with the training loss and the last val/acc (cifarlab.run.quiet_console keeps the
libraries' noise off it).
"""

from __future__ import annotations

from time import monotonic
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary, RichProgressBar
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cifarlab.callbacks.divergence import DivergenceGuard


def net_summary(
    net: nn.Module, input_size: int = 32
) -> tuple[list[tuple[str, str, int, int]], int]:
    """Per layer (name, type, parameters, forward FLOPs of one image) and total FLOPs.

    FLOPs are counted by ``torch.utils.flop_counter`` on a real forward pass (multiply-adds count
    two), so they follow whatever the network does, not a formula per layer type.
    """
    device = next(net.parameters()).device
    counter = FlopCounterMode(display=False)
    was_training = net.training
    net.eval()
    # force_eager: a net compiled in place (model.compile) is counted without compiling it here
    with torch.no_grad(), torch.compiler.set_stance("force_eager"), counter:
        net(torch.zeros(1, 3, input_size, input_size, device=device))
    net.train(was_training)
    per_module = counter.get_flop_counts()
    prefix = type(net).__name__
    rows = []
    for name, module in net.named_modules():
        if not name or any(True for _ in module.children()):
            continue  # leaves only
        params = sum(p.numel() for p in module.parameters(recurse=False))
        flops = sum(per_module.get(f"{prefix}.{name}", {}).values())
        if params or flops:
            rows.append((name, type(module).__name__, params, flops))
    return rows, counter.get_total_flops()


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(int(n))


class NetSummary(ModelSummary):
    """Replaces Lightning's summary of the LightningModule (which lists metric objects and, with
    its own FLOP estimate, often 0) by the network's layers, parameters and FLOPs per image."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        net = pl_module.net
        rows, total_flops = net_summary(net)
        table = Table(title=f"{type(net).__name__} (FLOPs: one 32x32 image, forward)")
        for column in ("layer", "type", "params", "FLOPs"):
            table.add_column(column, justify="right" if column in ("params", "FLOPs") else "left")
        for name, kind, params, flops in rows:
            table.add_row(name, kind, f"{params:,}", _human(flops))
        table.add_section()
        total = sum(p.numel() for p in net.parameters())
        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        table.add_row("total", "", f"{total:,}", _human(total_flops))
        Console().print(table)
        if trainable != total:
            Console().print(f"trainable parameters: {trainable:,} of {total:,}")


class ProgressBar(RichProgressBar):
    """Rich progress bar showing the training loss and the last val/acc, from values already on
    the host, redrawn ``refresh_rate`` times a second.

    Lightning asks for the bar's metrics after every training batch, so a bar that turned a device
    tensor into text there would make every step wait for the GPU. Instead, ``loss`` is the mean
    training loss that DivergenceGuard reads at each of its checks (every
    ``divergence_check_every_n_steps`` steps, at the end of every epoch and before validation,
    where the run reads from the device anyway): the mean of the steps since the check before.
    ``val/acc`` is read once when a validation ends.

    What the bar shows changes on the screen only when Rich's refresh thread draws it, so a
    training step updates the bar's task and metrics only once the last update is a refresh
    interval old (and at the epoch's last batch): a small network's step takes less time than
    that update. Ten refreshes a second (Rich's own default; Lightning's is 100) look as smooth,
    and the thread's drawing, which holds the interpreter's lock, takes a tenth of the time.
    """

    def __init__(self, refresh_rate: int = 10, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._val_acc: float | None = None
        self._next_update = 0.0  # monotonic() time of the next training-batch update
        self._last_batch = 0  # the epoch's last batch_idx

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._next_update = 0.0
        self._last_batch = self.total_train_batches - 1
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        now = monotonic()
        if now < self._next_update and idx < self._last_batch:
            return
        if self.refresh_rate > 0:
            self._next_update = now + 1 / self.refresh_rate
        super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        val_acc = trainer.callback_metrics.get("val/acc")
        if val_acc is not None and not trainer.sanity_checking:
            self._val_acc = float(val_acc)  # validation has just waited for the device
        super().on_validation_end(trainer, pl_module)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        guard = next((c for c in trainer.callbacks if isinstance(c, DivergenceGuard)), None)
        if guard is not None and guard.mean_loss is not None:
            items["loss"] = f"{guard.mean_loss:.3f}"
        if self._val_acc is not None:
            items["val/acc"] = f"{self._val_acc:.3f}"
        return items
