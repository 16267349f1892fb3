"""Per-epoch history.csv and curves.png in the run directory, without TensorBoard."""

from pathlib import Path

import pytest
from PIL import Image

from cifarlab.callbacks.curves import read_history
from cifarlab.run.jobs import train

from .conftest import compose_config, quick_overrides


def test_history_and_curves_follow_every_epoch(folder_root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "train", [*quick_overrides(folder_root, tmp_path), "trainer.max_epochs=3", "~logger"]
    )
    metrics = train(cfg)
    history = read_history(tmp_path / "history.csv")
    assert sorted(history) == [1, 2, 3]
    for row in history.values():
        assert row["train/loss"] > 0 and 0 <= row["val/acc"] <= 1 and row["lr"] > 0
    assert max(r["val/acc"] for r in history.values()) == pytest.approx(
        metrics["val/acc_best"], abs=1e-5
    )
    # one-cycle: the lr rises, then falls to about zero at the end
    assert history[3]["lr"] < history[1]["lr"]
    with Image.open(tmp_path / "curves.png") as png:
        assert png.size[0] > 500
