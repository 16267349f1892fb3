"""cifarlab.run.step_hooks: Lightning calls only the per-batch hooks a callback overrides, and a run
without a profiler builds no profiler context per hook."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LambdaCallback, ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.profilers import SimpleProfiler

from cifarlab.callbacks.divergence import DivergenceGuard
from cifarlab.internals import switch_off_inherited_hooks, switch_on_hooks
from cifarlab.run.step_hooks import BATCH_HOOKS, NoProfiler, SkipIdleHooks
from cifarlab.run.trainer import build_trainer

from .conftest import compose_config


class LossAfterBackward(L.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.calls += 1


def test_only_the_batch_hooks_a_callback_overrides_are_called(tmp_path: Path) -> None:
    """Lightning's profiler records every hook call it makes: with SkipIdleHooks, the per-batch
    ones are those of callbacks that override them, and every callback is as it was after fit."""
    mine = LossAfterBackward()
    callbacks = [ModelCheckpoint(dirpath=tmp_path), DivergenceGuard(2), mine, SkipIdleHooks()]
    profiler = SimpleProfiler()
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=2,
        callbacks=callbacks,
        profiler=profiler,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    called = set()
    for action in profiler.recorded_durations:
        owner, _, hook = action.removeprefix("[Callback]").rpartition(".")
        if action.startswith("[Callback]") and hook in BATCH_HOOKS:
            called.add((owner.split("{")[0], hook))  # ModelCheckpoint{...}: its settings
    assert called == {
        ("ModelCheckpoint", "on_train_batch_end"),
        ("DivergenceGuard", "on_train_batch_end"),
        ("LossAfterBackward", "on_after_backward"),
    }
    assert mine.calls == 4
    for callback in trainer.callbacks:
        assert all(callable(getattr(callback, hook)) for hook in BATCH_HOOKS)


def test_hooks_a_class_or_an_instance_defines_stay() -> None:
    lambdas = LambdaCallback(on_train_batch_start=lambda *args: None)
    mine = LossAfterBackward()
    switched = switch_off_inherited_hooks(lambdas, BATCH_HOOKS)
    assert "on_train_batch_start" not in switched and "on_train_batch_end" in switched
    assert callable(lambdas.on_train_batch_start) and lambdas.on_train_batch_end is None
    assert "on_after_backward" not in switch_off_inherited_hooks(mine, BATCH_HOOKS)
    switch_on_hooks(lambdas, switched)
    assert callable(lambdas.on_train_batch_end) and callable(lambdas.on_train_batch_start)


def test_runs_without_a_profiler_share_one_no_op_context_and_a_profiler_can_be_asked_for(
    tmp_path: Path,
) -> None:
    overrides = ["trainer.accelerator=cpu", f"paths.output_dir={tmp_path}"]
    profiler = build_trainer(compose_config("train", overrides).trainer).profiler
    assert isinstance(profiler, NoProfiler)
    with (  # nested, as Lightning's hook calls are
        profiler.profile("[Strategy]b.training_step") as outer,
        profiler.profile("[Callback]a.on_train_batch_end") as inner,
    ):
        assert outer is inner is None
    assert profiler.profile("one") is profiler.profile("other")
    simple = compose_config("train", [*overrides, "trainer.profiler=simple"]).trainer
    assert isinstance(build_trainer(simple).profiler, SimpleProfiler)
