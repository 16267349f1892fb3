"""callbacks.early_stopping: off by default; when on, stops on a plateau and says why."""

import csv
import json
from pathlib import Path

from cifarlab.run.jobs import train
from cifarlab.sweeps.summary import write_summary

from .conftest import compose_config, quick_overrides


def test_stops_on_a_plateau_and_says_why(folder_root: Path, tmp_path: Path) -> None:
    job = tmp_path / "sweep" / "0"
    cfg = compose_config(
        "train",
        [
            *quick_overrides(folder_root, job),
            "trainer.max_epochs=6",
            "callbacks.early_stopping.enabled=true",
            "callbacks.early_stopping.patience=1",
            # no epoch can gain more than 100 points of accuracy: it stops after the second epoch
            "callbacks.early_stopping.min_delta=1.0",
        ],
    )
    metrics = train(cfg)
    assert metrics["epochs"] == 2
    saved = json.loads((job / "metrics.json").read_text())
    assert saved["stop_reason"].startswith("early stopping after epoch 2: val/acc did not improve")
    assert saved["status"] == "completed" and saved["test/acc"] is not None
    (job / ".hydra").mkdir()  # what Hydra leaves in a job folder of a sweep
    write_summary(tmp_path / "sweep")
    with open(tmp_path / "sweep" / "summary.csv") as f:
        (row,) = csv.DictReader(f)
    assert row["stop_reason"] == saved["stop_reason"]
    assert "early stopping after epoch 2" in (tmp_path / "sweep" / "summary.md").read_text()


def test_off_by_default(folder_root: Path, tmp_path: Path) -> None:
    cfg = compose_config("train", [*quick_overrides(folder_root, tmp_path), "trainer.max_epochs=3"])
    assert cfg.callbacks.early_stopping.enabled is False
    metrics = train(cfg)
    assert metrics["epochs"] == 3 and metrics["stop_reason"] == "max_epochs=3 reached"
