"""cifarlab's Optuna search as a Hydra sweeper (``hydra/sweeper=optuna``, conf/hydra/sweeper/).

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace and imports every module
in it at each start, so this module holds the thin plugin class and imports nothing heavy; the
search itself is ``cifarlab.sweeps.search.Search``, imported when a sweep starts.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from cifarlab.errors import CifarlabError


class OptunaSearchSweeper(Sweeper):
    """``train.py -m hparams_search=NAME``: one worker of an Optuna study (cifarlab.sweeps.search).

    The keyword arguments are the fields of conf/hydra/sweeper/optuna.yaml; Hydra has already
    built ``sampler`` and ``pruner`` from their ``_target_``.
    """

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        """Runs the search; a mistake in its settings ends it with one paragraph and exit code 2
        (``HYDRA_FULL_ERROR=1`` keeps the traceback), as a mistake in a single run does."""
        from cifarlab.sweeps.search import Search

        assert self.config is not None
        try:
            return Search(config=self.config, launcher=self.launcher, **self.settings).run(
                arguments
            )
        except CifarlabError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"\nerror: {err}\n", file=sys.stderr)
            sys.exit(2)
