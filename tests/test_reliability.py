"""Reliability: bad input is named, interrupted runs resume exactly, checkpoints load safely."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifarlab.errors import CifarlabError
from cifarlab.module import ClassifierModule
from cifarlab.run import evaluate, train

from .conftest import compose_config, quick_overrides

RESUME_RUN = [
    "data.source=cifar10",
    "data.val_size=30",
    "model=bn_cnn",
    "model.width=8",
    "optimizer.lr=1e-3",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
]


def train_cfg(root: Path, out: Path, *extra: str):
    """A quick run on ``root``; ``extra`` overrides replace quick_overrides' values of a key."""
    keys = {o.split("=", 1)[0] for o in extra}
    base = [o for o in quick_overrides(root, out) if o.split("=", 1)[0] not in keys]
    return compose_config("train", [*base, *extra])


def stop_during(monkeypatch: pytest.MonkeyPatch, epoch: int, batch: int, stop) -> None:
    """Makes training step ``batch`` of ``epoch`` call ``stop()`` (raise or signal), once."""
    original = ClassifierModule.training_step

    def step(self, data, batch_idx):
        if self.current_epoch == epoch and batch_idx == batch:
            monkeypatch.setattr(ClassifierModule, "training_step", original)
            stop()
        return original(self, data, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", step)


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard curve of a run as (step, value) pairs, as TensorBoard would show them."""
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_result(
    cifar10_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = train(train_cfg(cifar10_root, tmp_path / "whole", *RESUME_RUN))
    assert whole["best_ckpt"].startswith(str(tmp_path / "whole/checkpoints/epoch002"))

    run = tmp_path / "cut"
    stop_during(monkeypatch, epoch=1, batch=2, stop=keyboard_interrupt)
    with pytest.raises(SystemExit) as info:
        train(train_cfg(cifar10_root, run, *RESUME_RUN))
    assert info.value.code == 130
    saved = json.loads((run / "metrics.json").read_text())
    last = run / "checkpoints" / "last.ckpt"
    assert saved["status"] == "interrupted" and saved["last_ckpt"] == str(last)
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the last completed epoch

    resumed = train(compose_config("train", [f"ckpt_path={last}"]))
    assert resumed["output_dir"] == str(run)
    for key in ("test/acc", "test/loss", "test/acc_class", "val/acc_best", "epochs"):
        assert resumed[key] == whole[key], key
    final = torch.load(last, weights_only=True)["state_dict"]
    reference = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in reference["state_dict"].items())
    curves, reference_curves = scalars(run), scalars(tmp_path / "whole")
    assert curves.keys() == reference_curves.keys()
    for tag, points in reference_curves.items():
        assert [s for s, _ in curves[tag]] == [s for s, _ in points], tag
        assert [v for _, v in curves[tag]] == pytest.approx([v for _, v in points]), tag
