"""cifarlab.callbacks.divergence: a non-finite training loss stops the run before a broken
checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cifarlab.callbacks.divergence import DIVERGED_KEYS, DivergenceGuard
from cifarlab.run.jobs import train
from cifarlab.training.module import ClassifierModule

from .conftest import train_cfg


def nan_loss_from_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    original = ClassifierModule.training_step

    def step(self, data, batch_idx):
        loss = original(self, data, batch_idx)
        return loss * float("nan") if self.current_epoch >= epoch else loss

    monkeypatch.setattr(ClassifierModule, "training_step", step)


def test_non_finite_loss_stops_the_run_and_keeps_the_best_checkpoint(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nan_loss_from_epoch(monkeypatch, epoch=1)
    metrics = train(train_cfg(folder_root, tmp_path, "trainer.max_epochs=4"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "diverged" and saved["epochs"] == 1
    assert "loss became nan at epoch 1, batch 0" in saved["message"]
    assert saved["test/acc"] == metrics["test/acc"] > 0.9  # tested on the epoch-0 checkpoint
    for path in (saved["best_ckpt"], saved["last_ckpt"]):
        state = torch.load(path, weights_only=True)
        assert state["epoch"] == 0
        assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_divergence_in_the_first_epoch_is_reported_without_a_checkpoint(
    folder_root: Path, tmp_path: Path
) -> None:
    cfg = train_cfg(folder_root, tmp_path, "optimizer=sgd", "optimizer.lr=1e30")
    metrics = train(cfg)
    assert metrics["status"] == "diverged" and metrics["best_ckpt"] is None
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


class DeviceOps(TorchDispatchMode):
    """Counts the aten ops run under it, but for ``detach`` (an alias: no work on the device)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is not torch.ops.aten.detach:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_steps_between_checks_cost_no_device_op_and_a_check_finds_the_first_bad_loss() -> None:
    guard = DivergenceGuard(check_every_n_steps=4)
    trainer = SimpleNamespace(
        val_check_batch=100,
        num_training_batches=100,
        world_size=1,
        current_epoch=3,
        callback_metrics={},
        strategy=SimpleNamespace(reduce=lambda tensor, reduce_op: tensor, all_gather=lambda t: t),
    )
    losses = [torch.tensor(v) for v in (1.0, float("inf"), float("nan"), 4.0)]
    with DeviceOps() as counted:
        for idx, loss in enumerate(losses[:3]):
            guard.on_train_batch_end(trainer, None, {"loss": loss}, None, idx)  # type: ignore[arg-type]
    assert counted.ops == []
    with pytest.raises(StopIteration):  # the check, at the fourth step
        guard.on_train_batch_end(trainer, None, {"loss": losses[3]}, None, 3)  # type: ignore[arg-type]
    assert guard.diverged
    epoch, batch, value = (float(trainer.callback_metrics[k]) for k in DIVERGED_KEYS)
    assert (epoch, batch, value) == (3, 1, float("inf"))
