"""The run's hyperparameters in TensorBoard's HParams tab, against its final metrics.

A Lightning callback listed in conf/callbacks/default.yaml (``callbacks.hparams=null`` switches it
off); it writes only into the run's TensorBoardLogger, on global rank 0.
"""

from __future__ import annotations

import lightning as L

from cifarlab.callbacks.tensorboard import run_tensorboard
from cifarlab.review.hparams_tab import hparams_summaries
from cifarlab.sweeps.plan import swept_keys
from cifarlab.utils import in_multirun


class HParamsLogger(L.Callback):
    """Writes the run's hyperparameters to TensorBoard's HParams tab, against its final metrics
    (cifarlab.review.hparams_tab says which columns and why). In a multirun the columns the sweep
    varies are marked as differing."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = run_tensorboard(trainer)
        if logger is None:
            return
        swept = swept_keys() if in_multirun() else set()
        summaries = hparams_summaries(dict(pl_module.hparams), trainer.max_epochs, swept)
        # SummaryWriter.file_writer is public (torch's own add_hparams writes through it) and
        # open from the writer's creation until Lightning's finalize closes it after fit
        for summary in summaries:
            logger.experiment.file_writer.add_summary(summary)
