"""cifarlab.divergence: a non-finite training loss stops the run before a broken checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cifarlab.module import ClassifierModule
from cifarlab.run import train

from .test_run import train_cfg


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
