"""How often a training step waits for the device: host reads counted per step of a real run.

On a GPU, an op that brings a device value to the host waits until the device has run all the
work queued before it, so a step that reads one cannot run ahead of the device. The default run
(progress bar, every default callback, the TensorBoard logger) reads only at DivergenceGuard's
checks: every ``divergence_check_every_n_steps`` steps, at the end of each epoch and before
validation. This test counts the reads of each training step of such a run on the CPU.

On the CPU every tensor lives on the host, so a read is told apart by what it would be on a GPU:

* counted: ``aten._local_scalar_dense`` (behind ``.item()``, ``float()``, ``int()`` and ``bool()``
  of a tensor); ops whose output size depends on the values (``nonzero``, ``masked_select``,
  ``unique*``, ``bincount``, ``equal``, indexing with a boolean mask, ``repeat_interleave``
  without ``output_size``); and ``Tensor.cpu``, ``Tensor.tolist`` and ``Tensor.numpy``, which
  copy a device tensor to the host but run no op at all on a CPU tensor (so a
  ``TorchFunctionMode`` sees them, next to the ``TorchDispatchMode`` that sees the ops).
* not counted: reads of an optimizer's ``step`` counters, which torch keeps on the host in a GPU
  run too (Adam-type optimizers, unless ``capturable`` or ``fused``); ``Tensor.to("cpu")``,
  which on the CPU is the very call that moves a batch to the model's device.

A training step runs from its batch being ready (Lightning's batch progress) to the next batch
being ready, so what runs at an epoch's end (logging, checkpoints, curves, the next epoch's start)
counts to the epoch's last step, which is a divergence check. Validation and test batches are not
training steps and are not counted.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import rich
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from cifarlab.callbacks.curves import HISTORY, read_history
from cifarlab.callbacks.divergence import DivergenceGuard
from cifarlab.run import jobs

from .conftest import compose_config

aten = torch.ops.aten
SCALAR_AND_SIZE_READS = {
    aten._local_scalar_dense,
    aten.nonzero,
    aten.masked_select,
    aten._unique,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
    aten.unique_dim_consecutive,
    aten.bincount,
    aten.equal,
}
HOST_COPIES = {torch.Tensor.cpu, torch.Tensor.tolist, torch.Tensor.numpy}


def _is_bool(index: Any) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def reads_its_data(func: Any, args: tuple, kwargs: dict) -> bool:
    """Whether an aten op brings a value to the host (on a GPU, waits for the device)."""
    packet = func.overloadpacket
    if packet in SCALAR_AND_SIZE_READS:
        return True
    if packet in (aten.index, aten.index_put, aten.index_put_):
        return any(_is_bool(i) for i in args[1])
    if packet is aten.repeat_interleave:  # repeats in a tensor, unless told the output's size
        return func is not aten.repeat_interleave.self_int and kwargs.get("output_size") is None
    return False


class HostReads:
    """Host reads per training step (global batch number, from 1) of the trainer it watches."""

    def __init__(self) -> None:
        self.trainer: L.Trainer | None = None
        self.per_step: collections.Counter[int] = collections.Counter()

    def host_tensors(self) -> list[torch.Tensor]:
        """Optimizer step counters: host tensors in a GPU run too."""
        assert self.trainer is not None
        return [
            state["step"]
            for optimizer in self.trainer.optimizers
            for state in optimizer.state.values()
            if isinstance(state.get("step"), torch.Tensor)
        ]

    def count(self, tensor: Any) -> None:
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return
        if any(tensor is step for step in self.host_tensors()):
            return
        step = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        if step > 0:  # 0: setting up the fit, before the first batch
            self.per_step[step] += 1


class CountOps(TorchDispatchMode):
    def __init__(self, reads: HostReads) -> None:
        super().__init__()
        self.reads = reads

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if reads_its_data(func, args, kwargs):
            self.reads.count(args[0] if args else None)
        return func(*args, **kwargs)


class CountHostCopies(TorchFunctionMode):
    def __init__(self, reads: HostReads) -> None:
        super().__init__()
        self.reads = reads

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        if func in HOST_COPIES:
            self.reads.count(args[0])
        return func(*args, **(kwargs or {}))


@pytest.fixture
def restores_rich_console() -> Iterator[None]:
    """Lightning's bar reconfigures Rich's global console with the bar's ``console_kwargs``; the
    default console comes back after the test."""
    yield
    rich.reconfigure()


@pytest.mark.parametrize(
    ("optimizer", "ema_decay"),
    [
        ("sgd", 0.0),
        ("adamw", 0.0),  # the default, with its step counters on the host
        ("adamw", 0.99),  # a weight average updated after every step
    ],
)
def test_training_steps_between_divergence_checks_read_nothing_from_the_device(
    optimizer: str,
    ema_decay: float,
    folder_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restores_rich_console: None,
) -> None:
    batches, epochs, every = 32, 2, 10  # 96 training images of folder_root in batches of 3
    cfg = compose_config(
        "train",
        [
            "data.source=folder",
            f"data.root={folder_root}",
            "data.val_size=24",
            "data.batch_size=3",
            f"trainer.max_epochs={epochs}",
            "trainer.accelerator=cpu",
            "model=lenet",
            f"optimizer={optimizer}",
            f"ema.decay={ema_decay}",
            f"divergence_check_every_n_steps={every}",
            "trainer.log_every_n_steps=8",  # log steps among the steps between checks
            # a console Rich takes for a terminal, so that the bar draws as it would for a user
            "+callbacks.progress_bar.console_kwargs={force_terminal:true,width:200}",
            f"paths.output_dir={tmp_path}",
        ],
    )
    reads = HostReads()
    build_fit_trainer = jobs.build_fit_trainer

    def watched_trainer(config: Any) -> L.Trainer:
        reads.trainer = build_fit_trainer(config)
        return reads.trainer

    monkeypatch.setattr(jobs, "build_fit_trainer", watched_trainer)
    with CountOps(reads), CountHostCopies(reads):
        metrics = jobs.train(cfg)

    assert metrics["epochs"] == epochs
    checks = {
        epoch * batches + done
        for epoch in range(epochs)
        for done in range(1, batches + 1)
        if done % every == 0 or done == batches
    }
    assert set(reads.per_step) == checks, f"host reads per step: {dict(reads.per_step)}"
    # the bar was drawn, with the loss of the last check and the last validation's accuracy
    assert reads.trainer is not None
    guard = next(c for c in reads.trainer.callbacks if isinstance(c, DivergenceGuard))
    last_epoch = read_history(tmp_path / HISTORY)[epochs]
    shown = capsys.readouterr().out
    assert f"loss: {guard.mean_loss:.3f}" in shown
    assert f"val/acc: {last_epoch['val/acc']:.3f}" in shown
