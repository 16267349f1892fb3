"""The provenance of a run (cifarlab.run.provenance) in its folder and in every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from cifarlab.run.provenance import (
    CHECKPOINT_KEY,
    PROVENANCE_FILE,
    SOURCE_DIR,
    collect,
    describe_device,
    write_provenance,
)
from cifarlab.utils import log


class RunProvenance(L.Callback):
    """Records the provenance in the run folder and in every checkpoint.

    The record is collected when the callback is made (in the job's own process); the device is
    added at ``setup``, where the strategy has chosen it and, under ``ddp_spawn``/``ddp_fork``,
    inside the worker that uses it. Global rank 0 writes ``provenance.json`` into ``folder``.
    """

    def __init__(self, folder: Path, source_dir: Path = SOURCE_DIR) -> None:
        self.folder = Path(folder)
        self.record, self.diff = collect(source_dir)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.record["device"] = describe_device(trainer.strategy.root_device)
        if trainer.is_global_zero:
            try:
                write_provenance(self.folder, self.record, self.diff)
            except OSError as err:
                log.warning("Could not write %s: %s", self.folder / PROVENANCE_FILE, err)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = dict(self.record)
