"""The one place where cifarlab reads a library's private parts, each where no public API exists.

Everything else in cifarlab uses public APIs. What is here is pinned by tests/test_internals.py,
so a library update that changes it fails there, by name, instead of somewhere deep in a run.

- Lightning: whether a strategy starts its other processes by running the script again. Its
  launchers (``strategy.launcher``) are all private classes; the one public property they share,
  ``is_interactive_compatible``, is False both for the script launcher and for ``ddp_spawn``, and
  DDPStrategy keeps its ``start_method`` private too. Only the launcher's class tells them apart.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher


def launches_by_running_the_script(strategy: Any) -> bool:
    """True when ``strategy``'s launcher is Lightning's script launcher (``ddp``, not
    ``ddp_spawn``/``ddp_fork``); whether it really starts processes depends on the device count
    and the cluster environment (cifarlab.accelerators.relaunches_script)."""
    return isinstance(getattr(strategy, "launcher", None), _SubprocessScriptLauncher)
