"""cifarlab.run.build: what a run is built from its config; without validation nothing asks for
it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint, model_checkpoint
from lightning.pytorch.utilities.rank_zero import WarningCache

from cifarlab.run.build import build_callbacks
from cifarlab.run.jobs import train
from cifarlab.sweeps.rows import job_row

from .conftest import compose_config, train_cfg


@pytest.mark.parametrize(
    ("validation", "monitor", "top_k"),
    [("data.val_size=24", "val/acc", 1), ("data.val_size=0", None, 0)],
)
def test_the_best_checkpoint_keeps_nothing_only_without_validation(
    tmp_path: Path, validation: str, monitor: str | None, top_k: int
) -> None:
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}", validation])
    best, last = [c for c in build_callbacks(cfg) if isinstance(c, ModelCheckpoint)]
    assert (best.monitor, best.save_top_k) == (monitor, top_k)
    assert (last.monitor, last.save_top_k, last.filename) == (None, 1, "last")


@pytest.mark.parametrize("no_validation", ["data.val_size=0", "trainer.limit_val_batches=0"])
def test_a_run_without_validation_keeps_last_ckpt_warns_nothing_and_is_completed(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_validation: str
) -> None:
    """No "could not find the monitored key val/acc" warning; the final weights are tested and
    the sweep summary counts the run as completed."""
    # Lightning warns once per process: a warning from an earlier test would hide this one
    monkeypatch.setattr(model_checkpoint, "warning_cache", WarningCache())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(train_cfg(folder_root, tmp_path, no_validation, "trainer.max_epochs=2"))
    assert not [w for w in caught if "monitored key" in str(w.message)]
    assert metrics["best_ckpt"] is None and metrics["val/acc_best"] is None
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
    row = job_row(tmp_path)
    assert row["status"] == "completed" and row["val/acc_best"] is None
    assert row["test/acc"] is not None and row["error"] == ""
