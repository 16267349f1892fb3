"""The one place where cifarlab reads a library's private parts, each where no public API exists.

Everything else in cifarlab uses public APIs. What is here is pinned by tests/test_internals.py,
so a library update that changes it fails there, by name, instead of somewhere deep in a run.

- Lightning: whether a strategy starts its other processes by running the script again. Its
  launchers (``strategy.launcher``) are all private classes; the one public property they share,
  ``is_interactive_compatible``, is False both for the script launcher and for ``ddp_spawn``, and
  DDPStrategy keeps its ``start_method`` private too. Only the launcher's class tells them apart.
- Lightning: the averaged copy of the model that ``WeightAveraging`` keeps. The callback offers no
  accessor for it (it swaps it in for validation and copies it out at the end of fit on its own);
  cifarlab.ema's ``lookahead`` copies it back into the trained weights after each update.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from torch import nn


def launches_by_running_the_script(strategy: Any) -> bool:
    """True when ``strategy``'s launcher is Lightning's script launcher (``ddp``, not
    ``ddp_spawn``/``ddp_fork``); whether it really starts processes depends on the device count
    and the cluster environment (cifarlab.accelerators.relaunches_script)."""
    return isinstance(getattr(strategy, "launcher", None), _SubprocessScriptLauncher)


def averaged_module(callback: WeightAveraging) -> nn.Module:
    """The network holding ``callback``'s running average, as set up at the start of fit."""
    average = callback._average_model
    if average is None:
        raise RuntimeError("WeightAveraging keeps an average only once fit has set it up")
    return average.module
