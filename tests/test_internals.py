"""Pins the library internals that cifarlab.internals reads, so a library update that changes them
fails here by name."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.demos.boring_classes import BoringModel

from cifarlab.internals import averaged_module, launches_by_running_the_script


def cpu_trainer(strategy: str, devices: int) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


@pytest.mark.parametrize(
    ("strategy", "devices", "script"),
    [("ddp", 2, True), ("ddp_spawn", 2, False), ("ddp_fork", 2, False), ("auto", 1, False)],
)
def test_only_script_launched_ddp_counts_as_running_the_script_again(
    strategy: str, devices: int, script: bool
) -> None:
    trainer = cpu_trainer(strategy, devices)
    assert launches_by_running_the_script(trainer.strategy) is script


def test_no_public_property_tells_the_script_launcher_from_spawn() -> None:
    """Why the adapter exists: ``is_interactive_compatible`` is False for both."""
    launchers = [cpu_trainer(s, 2).strategy.launcher for s in ("ddp", "ddp_spawn")]
    assert [launcher.is_interactive_compatible for launcher in launchers] == [False, False]


def test_the_averaged_module_is_the_live_average_weight_averaging_updates() -> None:
    model, callback = BoringModel(), WeightAveraging()
    with pytest.raises(RuntimeError, match="once fit has set it up"):
        averaged_module(callback)
    callback.setup(SimpleNamespace(), model, "fit")  # type: ignore[arg-type]
    average = averaged_module(callback)
    start = [p.detach().clone() for p in model.parameters()]
    for step in (1, 2):  # the first update copies the weights, the second averages them
        trainer = SimpleNamespace(global_step=step)
        callback.on_train_batch_end(trainer, model, None, None, 0)  # type: ignore[arg-type]
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    triples = zip(average.parameters(), start, model.parameters(), strict=True)
    for averaged, first, current in triples:
        assert averaged is not current
        assert torch.allclose(averaged, first + 0.5)  # the mean of first and first + 1


def test_lightning_calls_no_callback_hook_that_is_not_callable(tmp_path: Path) -> None:
    """What cifarlab.step_hooks relies on: a hook set to None on a callback is skipped."""

    class Steps(L.Callback):
        def __init__(self) -> None:
            self.steps = 0

        def on_train_batch_start(self, *args: object) -> None:
            self.steps += 1

    steps = Steps()
    steps.on_train_batch_end = None  # type: ignore[assignment]
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=0,
        callbacks=[steps],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    assert steps.steps == 3
