"""train.py tune=lr_find: Lightning's range test, plot and suggestion in the run directory."""

import json
from pathlib import Path

import pytest

from cifarlab.run.jobs import train

from .conftest import compose_config, quick_overrides


def test_lr_find_saves_plot_and_suggestion(
    folder_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = compose_config(
        "train",
        [*quick_overrides(folder_root, tmp_path), "tune=lr_find", "lr_find.num_training=30"],
    )
    result = train(cfg)
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert len(saved["lr"]) == len(saved["loss"]) > 10
    assert saved["lr"] == sorted(saved["lr"]) and 1e-6 <= saved["lr"][0] < saved["lr"][-1] <= 1.0
    assert saved["suggested_lr"] == result["suggested_lr"]
    assert saved["lr"][0] <= saved["suggested_lr"] <= saved["lr"][-1]
    assert f"train.py optimizer.lr={saved['suggested_lr']:.3g}" in capsys.readouterr().out
    assert (tmp_path / "lr_find.png").stat().st_size > 1000
    assert not (tmp_path / "metrics.json").exists()  # nothing was trained
