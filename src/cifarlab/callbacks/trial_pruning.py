"""A search trial's validations, reported to its Optuna study, and the fit stopped when the
study's pruner says the trial is hopeless.

Every job of ``train.py -m hparams_search=NAME`` runs one trial (cifarlab.sweeps.search). The job
may run in the sweeper's process or in another one (joblib, SLURM), so it opens the study itself,
from the storage and study name of its own Hydra config, and takes its trial by number
(``search.trial``). Pruning stops the fit as early stopping does (``trainer.should_stop``), so the
checkpoints, history and logs of the epochs it ran are written as usual; the training job
(cifarlab.run.jobs) then records the run as ``pruned`` (with its epochs) and skips the test.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from cifarlab.utils import in_multirun, to_plain_dict

# left in trainer.callback_metrics (which also reach a ddp_spawn/fork parent) for
# cifarlab.run.records
PRUNED_EPOCH = "search/pruned_epoch"


def trial_pruning(trial: int | None, prune: bool = True) -> TrialPruning | None:
    """The callback of a search job (``callbacks.trial_pruning`` in conf/hparams_search/); None
    outside a search's multirun, and for the jobs of a trial's further seeds, which only the
    first seed's job reports for."""
    if trial is None or not prune or not in_multirun():
        return None  # e.g. a trial's checkpoint continued as a run of its own
    from cifarlab.sweeps.storage import storage_url

    hydra_cfg = HydraConfig.get()
    sweeper = hydra_cfg.sweeper
    return TrialPruning(
        trial=int(trial),
        storage=storage_url(sweeper.get("storage"), hydra_cfg.sweep.dir),
        study_name=str(sweeper.study_name),
        pruner=to_plain_dict(sweeper.pruner),
        monitor=str(sweeper.report),
    )


class TrialPruning(L.Callback):
    """Reports ``monitor`` after every validation as the trial's intermediate value and asks the
    pruner. The step is the number of earlier validations (the epoch index when validating every
    epoch), so a pruner's ``n_warmup_steps`` is the number of validations a trial always gets.

    Rank 0 talks to the storage; its decision reaches every rank, so DDP stops as one.
    """

    def __init__(
        self, trial: int, storage: str, study_name: str, pruner: dict[str, Any], monitor: str
    ) -> None:
        self.trial_number, self.storage, self.study_name = trial, storage, study_name
        self.pruner, self.monitor = pruner, monitor
        self.validations = 0
        self._trial: Any = None  # the optuna.Trial, on rank 0 only

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._trial = self._open_trial()

    def _open_trial(self) -> Any:
        import optuna

        from cifarlab.sweeps.storage import open_storage, trial_id

        storage = open_storage(self.storage)
        study = optuna.load_study(
            study_name=self.study_name, storage=storage, pruner=instantiate(self.pruner)
        )
        return optuna.Trial(study, trial_id(storage, self.study_name, self.trial_number))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        step, self.validations = self.validations, self.validations + 1
        prune = False
        if self._trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None and math.isfinite(float(value)):  # NaN: the divergence check's
                self._trial.report(float(value), step)
                prune = self._trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
            trainer.callback_metrics[PRUNED_EPOCH] = torch.tensor(float(trainer.current_epoch + 1))


def pruned_epoch(trainer: L.Trainer) -> int | None:
    """The epoch after which the search's pruner stopped this fit, or None."""
    value = trainer.callback_metrics.get(PRUNED_EPOCH)
    return int(value) if value is not None else None
