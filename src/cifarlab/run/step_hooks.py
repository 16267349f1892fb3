"""What Lightning's hook calls cost a training step: callback hooks that do nothing are not
called, and a run without a profiler pays for no profiler context.

Lightning calls every hook of every callback at every step (``on_train_batch_start``,
``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step``,
``on_before_zero_grad``, ``on_train_batch_end``), also when the callback inherits the hook from
``L.Callback``, where it does nothing. With the dozen callbacks of a default run that is about 70
calls a step, of which about 60 do nothing. Each call, and each of the module's and strategy's
hooks (about 25 a step), runs inside ``trainer.profiler.profile(...)``; without a profiler that is
Lightning's ``PassThroughProfiler``, whose context is a generator built anew every time. Together:
tens of microseconds a step, more than a small network's step on a GPU.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import lightning as L
from lightning.pytorch.profilers import PassThroughProfiler

from cifarlab.internals import switch_off_inherited_hooks, switch_on_hooks

# the hooks Lightning calls for every batch
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


class SkipIdleHooks(L.Callback):
    """From ``setup`` to ``teardown`` of each stage (fit, test, ...), Lightning calls a callback's
    per-batch hook only where the callback overrides it; the callbacks are as they were after."""

    def __init__(self) -> None:
        self._switched: list[tuple[L.Callback, list[str]]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._switched = [
            (callback, switch_off_inherited_hooks(callback, BATCH_HOOKS))
            for callback in trainer.callbacks
        ]

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for callback, names in self._switched:
            switch_on_hooks(callback, names)
        self._switched = []


class NoProfiler(PassThroughProfiler):
    """Lightning's profiler for runs without one (it records nothing), whose ``profile()`` hands
    out one shared no-op context instead of a new generator-based one for every hook call.
    ``trainer.profiler=simple`` (or advanced, pytorch) replaces it as usual."""

    _context = contextlib.nullcontext()

    def profile(self, action_name: str) -> AbstractContextManager:
        return self._context
