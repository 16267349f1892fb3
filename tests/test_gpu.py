"""On a CUDA GPU: a training epoch, end to end, never waits for the device.

Marked ``gpu`` (``uv run pytest -m gpu``; benchmarks/gpu_check.py runs them); skipped without CUDA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from cifarlab.run import train

from .conftest import compose_config, quick_overrides

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


class SyncsAreErrors(L.Callback):
    """Turns every host synchronization into an error from the start of each epoch's second step
    until the end of its last step, i.e. all a step does: data, forward, backward, optimizer,
    metrics, every callback listed before this one. It is listed after the config's callbacks, so
    only cifarlab's own safety callbacks run after it: the divergence check, set here to read the
    device only at the epoch's last step (a planned read, the one sync of the epoch)."""

    steps = 0  # checked steps, over all instances (Hydra builds the one a run uses)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if args[-1] >= 1:  # batch 0 logs the image grid of the first batch, once
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if torch.cuda.get_sync_debug_mode() != 0:
            SyncsAreErrors.steps += 1
        torch.cuda.set_sync_debug_mode("default")

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize(
    "options",
    [
        ["model=lenet"],
        ["model=bn_cnn", "model.width=16", "data.augment=true", "trainer.precision=bf16-mixed"],
    ],
    ids=["lenet", "bn_cnn-augment-bf16"],
)
def test_a_training_epoch_makes_no_host_sync(
    folder_root: Path, tmp_path: Path, options: list[str]
) -> None:
    SyncsAreErrors.steps = 0
    overrides = [
        o
        for o in quick_overrides(folder_root, tmp_path)
        if not any(key in o for key in ("accelerator", "progress_bar"))  # the default bar, on
    ]
    cfg = compose_config(
        "train",
        [
            *overrides,
            *options,
            "trainer=gpu",
            "divergence_check_every_n_steps=1000",
            "+callbacks.syncs_are_errors._target_=tests.test_gpu.SyncsAreErrors",
        ],
    )
    try:
        metrics = train(cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert SyncsAreErrors.steps == 2 * 5  # 96 training images, batch 16: steps 1-5 of each epoch
