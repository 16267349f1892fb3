"""The one place where cifarlab reads a library's private parts, each where no public API exists.

Everything else in cifarlab uses public APIs. What is here is pinned by tests/test_internals.py,
so a library update that changes it fails there, by name, instead of somewhere deep in a run.

- Lightning: whether a strategy starts its other processes by running the script again. Its
  launchers (``strategy.launcher``) are all private classes; the one public property they share,
  ``is_interactive_compatible``, is False both for the script launcher and for ``ddp_spawn``, and
  DDPStrategy keeps its ``start_method`` private too. Only the launcher's class tells them apart.
- Lightning: the worker processes of ``ddp_spawn``/``ddp_fork``. Their launcher
  (``_MultiProcessingLauncher``) keeps them in ``procs`` and stops them with ``kill`` (what
  Lightning's own SIGTERM handler calls); the job's own process needs both to pass a SIGTERM on
  to them and wait for them (cifarlab.run.workers.sigterm_reaches_workers).
- Lightning: the averaged copy of the model that ``WeightAveraging`` keeps. The callback offers no
  accessor for it (it swaps it in for validation and copies it out at the end of fit on its own);
  cifarlab.training.ema updates it, counts its updates in its ``n_averaged`` (saved in checkpoints)
  and, with ``lookahead``, copies it back into the trained weights after each update.
- Lightning: how it calls callback hooks. ``_call_callback_hooks`` calls a callback's hook only
  when ``callable(getattr(callback, name))``, each call inside a profiler context (also when no
  profiler is set); ``L.Callback`` defines every hook as a method that does nothing, so without
  that check every callback would cost every step several calls. No public switch turns a hook
  off; cifarlab.run.step_hooks sets the ones a callback leaves as they are to None.
- Hydra: the jobs its basic sweeper will launch. Its class lives in ``hydra._internal``; its
  static ``split_arguments`` expands a grid in launch order (job ``i`` is the ``i``-th), which
  cifarlab.sweeps.plan needs to list the jobs of a stopped sweep that never started.
- Lightning: the optimizer steps a fit has taken, in a checkpoint's loop state. Lightning counts
  them in two records, one for automatic and one for manual optimization, and
  ``trainer.global_step`` reads the one of the mode the module is in; a checkpoint written in the
  other mode (cifarlab.training.module chooses the mode from its trainer's settings) resumes
  with the count carried over (``carry_optimizer_steps``). No public API sets the count.
- Lightning: when a ``ModelCheckpoint`` saves between epochs. It keeps ``every_n_train_steps``
  and ``train_time_interval`` private, and saves by them as documented only under automatic
  optimization: under manual optimization it never saves by time, and saves by steps with a
  warning about a "pre-optimization state" that cifarlab's step does not have.
  cifarlab.training.module hands the step to Lightning when a callback saves between epochs
  (``saves_between_epochs``).
"""

from __future__ import annotations

import copy
import signal
from collections.abc import Iterable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

import lightning as L
import torch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch import nn


def launches_by_running_the_script(strategy: Any) -> bool:
    """True when ``strategy``'s launcher is Lightning's script launcher (``ddp``, not
    ``ddp_spawn``/``ddp_fork``); whether it really starts processes depends on the device count
    and the cluster environment (cifarlab.run.trainer.relaunches_script)."""
    return isinstance(getattr(strategy, "launcher", None), _SubprocessScriptLauncher)


def in_process_workers(strategy: Any) -> list[BaseProcess] | None:
    """The worker processes ``strategy`` started from inside this process (``ddp_spawn``,
    ``ddp_fork``: empty until fit starts them); None for every other launch."""
    launcher = getattr(strategy, "launcher", None)
    return list(launcher.procs) if isinstance(launcher, _MultiProcessingLauncher) else None


def signal_workers(strategy: Any, signum: signal.Signals) -> None:
    """Sends ``signum`` to the workers of ``strategy``'s in-process launcher, those still alive."""
    launcher = strategy.launcher
    assert isinstance(launcher, _MultiProcessingLauncher)
    launcher.kill(signum)


def is_grid_sweeper(target: str) -> bool:
    """True for Hydra's basic sweeper's ``_target_`` (the default of ``train.py -m``)."""
    return target == f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"


def grid_jobs(overrides: Sequence[Override]) -> list[list[str]]:
    """Every job's overrides, in the order Hydra's basic sweeper launches and numbers them."""
    return BasicSweeper.split_arguments(list(overrides), None)[0]


def averaged_module(callback: WeightAveraging) -> nn.Module:
    """The network holding ``callback``'s running average, as set up at the start of fit."""
    average = callback._average_model
    if average is None:
        raise RuntimeError("WeightAveraging keeps an average only once fit has set it up")
    return average.module


def switch_off_inherited_hooks(callback: L.Callback, hooks: Iterable[str]) -> list[str]:
    """Sets to None, on ``callback`` itself, each of ``hooks`` that it inherits unchanged from
    ``L.Callback`` (a method that does nothing), so Lightning no longer calls it; returns their
    names. A hook the callback's class overrides, or one set on the instance (as Lightning's
    ``LambdaCallback`` does), stays."""
    switched = []
    for name in hooks:
        if getattr(getattr(callback, name, None), "__func__", None) is getattr(L.Callback, name):
            setattr(callback, name, None)
            switched.append(name)
    return switched


def switch_on_hooks(callback: L.Callback, names: Iterable[str]) -> None:
    """Undoes ``switch_off_inherited_hooks``: the class's methods are ``callback``'s hooks again."""
    for name in names:
        if name in vars(callback) and getattr(callback, name) is None:
            delattr(callback, name)


def averaged_updates(callback: WeightAveraging) -> torch.Tensor:
    """The device tensor counting the updates of ``callback``'s average (``n_averaged`` of its
    ``AveragedModel``), as set up at the start of fit."""
    average = callback._average_model
    if average is None:
        raise RuntimeError("WeightAveraging keeps an average only once fit has set it up")
    return average.n_averaged


# the two records of a fit's optimizer steps in a checkpoint's "loops" state (see the docstring)
AUTOMATIC_STEPS = "epoch_loop.automatic_optimization.optim_progress"
MANUAL_STEPS = "epoch_loop.manual_optimization.optim_step_progress"


def carry_optimizer_steps(checkpoint: dict[str, Any], automatic: bool) -> None:
    """Copies the other mode's step count into the record of the mode the resuming module runs in
    (``automatic``), when that record holds none, so ``trainer.global_step`` continues."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    if AUTOMATIC_STEPS not in loop or MANUAL_STEPS not in loop:
        return
    automatic_steps = loop[AUTOMATIC_STEPS]["optimizer"]["step"]
    if automatic and automatic_steps["total"]["completed"] == 0:
        loop[AUTOMATIC_STEPS]["optimizer"]["step"] = copy.deepcopy(loop[MANUAL_STEPS])
    elif not automatic and loop[MANUAL_STEPS]["total"]["completed"] == 0:
        loop[MANUAL_STEPS] = copy.deepcopy(automatic_steps)


def saves_between_epochs(trainer: L.Trainer) -> bool:
    """Whether one of ``trainer``'s ``ModelCheckpoint`` callbacks saves every N training steps or
    every time interval (``every_n_train_steps``, ``train_time_interval``)."""
    return any(
        isinstance(callback, ModelCheckpoint)
        and (callback._every_n_train_steps > 0 or callback._train_time_interval is not None)
        for callback in trainer.checkpoint_callbacks
    )
