"""The GPU tests' check as a plain function: a training epoch, end to end, never waits for the GPU.

tests/test_gpu.py runs it under pytest; benchmarks/gpu_check.py runs it directly where pytest is
missing (a GPU machine without network may lack it). So nothing here imports pytest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from cifarlab.run.jobs import train

CONF = Path(__file__).resolve().parents[1] / "conf"
EPOCHS = 2
# the configurations checked, by name: the plain path, and augmentation with bf16 autocast
CASES = {
    "lenet": ["model=lenet"],
    "bn_cnn-augment-bf16": [
        "model=bn_cnn",
        "model.width=16",
        "data.augment=true",
        "trainer.precision=bf16-mixed",
    ],
}


class SyncsAreErrors(L.Callback):
    """Turns every host synchronization into an error from the start of each epoch's second step
    until the end of its last step, i.e. all a step does: data, forward, backward, optimizer,
    metrics, every callback listed before this one. It is listed after the config's callbacks, so
    only cifarlab's own safety callbacks run after it: the divergence check, set here to read the
    device only at the epoch's last step (a planned read, the one sync of the epoch)."""

    # over all instances (Hydra builds the one a run uses): steps checked, steps in all
    checked = 0
    batches = 0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        SyncsAreErrors.batches += 1
        if args[-1] >= 1:  # batch 0 logs the image grid of the first batch, once
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if torch.cuda.get_sync_debug_mode() != 0:
            SyncsAreErrors.checked += 1
        torch.cuda.set_sync_debug_mode("default")

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        torch.cuda.set_sync_debug_mode("default")


def check_no_host_sync(data_root: Path, out: Path, options: list[str]) -> None:
    """Trains ``EPOCHS`` epochs on the folder-source data at ``data_root`` with the default
    progress bar, callbacks and logger; a host sync in a checked step raises. Raises
    AssertionError when the run did not complete or steps went unchecked."""
    SyncsAreErrors.checked = SyncsAreErrors.batches = 0
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "data.source=folder",
                f"data.root={data_root}",
                "data.val_size=24",
                "data.batch_size=16",
                f"trainer.max_epochs={EPOCHS}",
                "trainer.enable_model_summary=false",
                f"paths.output_dir={out}",
                *options,
                "trainer=gpu",
                "divergence_check_every_n_steps=1000",
                "+callbacks.syncs_are_errors._target_=tests.gpu_steps.SyncsAreErrors",
            ],
        )
    try:
        metrics = train(cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert metrics["status"] == "completed" and metrics["epochs"] == EPOCHS, metrics
    # every step but each epoch's first ran with syncs as errors
    assert SyncsAreErrors.batches > EPOCHS, SyncsAreErrors.batches
    assert SyncsAreErrors.checked == SyncsAreErrors.batches - EPOCHS, (
        SyncsAreErrors.checked,
        SyncsAreErrors.batches,
    )
