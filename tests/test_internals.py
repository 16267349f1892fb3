"""Pins the library internals that cifarlab.internals reads, so a library update that changes them
fails here by name."""

from __future__ import annotations

import lightning as L
import pytest

from cifarlab.internals import launches_by_running_the_script


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
