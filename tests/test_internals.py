"""Pins the library internals that cifarlab.internals reads, so a library update that changes them
fails here by name."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from lightning.pytorch.demos.boring_classes import BoringModel, ManualOptimBoringModel

from cifarlab.internals import (
    averaged_module,
    grid_jobs,
    in_process_workers,
    is_grid_sweeper,
    launches_by_running_the_script,
    saves_between_epochs,
)

from .conftest import CONF_DIR


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


def fit_three_steps(
    root: Path, module: L.LightningModule, callback: L.Callback, **kwargs: object
) -> None:
    """One epoch of 3 training steps on the CPU with ``callback``: no validation, logger, bar or
    summary."""
    L.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=0,
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,
    ).fit(module)


def test_lightning_calls_no_callback_hook_that_is_not_callable(tmp_path: Path) -> None:
    """What cifarlab.run.step_hooks relies on: a hook set to None on a callback is skipped."""

    class Steps(L.Callback):
        def __init__(self) -> None:
            self.steps = 0

        def on_train_batch_start(self, *args: object) -> None:
            self.steps += 1

    steps = Steps()
    steps.on_train_batch_end = None  # type: ignore[assignment]
    fit_three_steps(tmp_path, BoringModel(), steps, enable_checkpointing=False)
    assert steps.steps == 3


@pytest.mark.parametrize(
    ("strategy", "devices", "in_process"),
    [("ddp", 2, False), ("ddp_spawn", 2, True), ("ddp_fork", 2, True), ("auto", 1, False)],
)
def test_only_spawn_and_fork_ddp_have_in_process_workers(
    strategy: str, devices: int, in_process: bool
) -> None:
    """Before fit starts them there are none; other launches have no such list (None)."""
    workers = in_process_workers(cpu_trainer(strategy, devices).strategy)
    assert workers == ([] if in_process else None)


def test_the_grid_is_expanded_in_the_order_hydras_basic_sweeper_numbers_its_jobs() -> None:
    overrides = OverridesParser.create().parse_overrides(["a=1,2", "+b=x", "c=range(0,2)"])
    assert grid_jobs(overrides) == [
        ["a=1", "+b=x", "c=0"],
        ["a=1", "+b=x", "c=1"],
        ["a=2", "+b=x", "c=0"],
        ["a=2", "+b=x", "c=1"],
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        default = compose("train", return_hydra_config=True).hydra.sweeper._target_
    assert is_grid_sweeper(default) and not is_grid_sweeper("hydra_plugins.optuna.Sweeper")


def test_saves_between_epochs_reads_each_checkpoints_steps_and_time_interval() -> None:
    def saves(*checkpoints: ModelCheckpoint) -> bool:
        return saves_between_epochs(L.Trainer(callbacks=list(checkpoints), logger=False))

    assert not saves(ModelCheckpoint(), ModelCheckpoint(every_n_epochs=2))
    assert saves(ModelCheckpoint(), ModelCheckpoint(every_n_train_steps=5))
    assert saves(ModelCheckpoint(train_time_interval=timedelta(minutes=30)))


@pytest.mark.parametrize("module", [BoringModel, ManualOptimBoringModel])
def test_model_checkpoint_saves_by_time_only_under_automatic_optimization(
    tmp_path: Path, module: type[L.LightningModule]
) -> None:
    """Why cifarlab.training.module hands the step to Lightning when a checkpoint saves by time:
    under manual optimization ModelCheckpoint never saves by ``train_time_interval``."""
    checkpoints = tmp_path / "checkpoints"
    saver = ModelCheckpoint(
        dirpath=checkpoints, filename="{step}", save_top_k=-1, train_time_interval=timedelta(0)
    )
    fit_three_steps(tmp_path, module(), saver)
    saved_mid_epoch = (checkpoints / "step=1.ckpt").exists()
    assert saved_mid_epoch == module().automatic_optimization
