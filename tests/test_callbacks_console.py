"""A quiet console: the network's own summary with real FLOPs, no library tips or noise."""

import itertools
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import rich
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from cifarlab.callbacks import console
from cifarlab.callbacks.console import ProgressBar, net_summary
from cifarlab.callbacks.divergence import DivergenceGuard
from cifarlab.models.lenet import LeNet
from cifarlab.run.jobs import train

from .conftest import compose_config, quick_overrides


def test_lenet_summary_counts_its_real_flops_and_parameters() -> None:
    rows, total = net_summary(LeNet())
    # multiply-adds x 2: conv1 75*6 per output pixel (28x28), conv2 150*16 (10x10), then the fcs
    expected = 2 * (75 * 6 * 28 * 28 + 150 * 16 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10)
    assert total == expected == 1_303_440
    assert sum(r[2] for r in rows) == 62_006
    assert [r[0] for r in rows if r[3]] == [
        "features.0",
        "features.3",
        "classifier.0",
        "classifier.2",
        "classifier.4",
    ]


def test_training_prints_no_tips_and_no_library_deprecations(
    folder_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    overrides = [
        o for o in quick_overrides(folder_root, tmp_path) if "enable_model_summary" not in o
    ]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        train(compose_config("train", [*overrides, "trainer.max_epochs=1"]))
    assert not [r for r in caplog.records if "Tip" in r.getMessage()]
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    out = capsys.readouterr().out
    assert "features.0" in out and "1.30 M" in out  # the net's summary with its FLOPs
    assert "val_metrics" not in out  # not Lightning's summary of the LightningModule


def test_progress_bar_shows_the_mean_loss_read_at_each_divergence_check() -> None:
    guard = DivergenceGuard(check_every_n_steps=3)
    trainer = SimpleNamespace(
        callbacks=[guard],
        loggers=[],
        progress_bar_metrics={},
        val_check_batch=100,
        num_training_batches=100,
        world_size=1,
        strategy=SimpleNamespace(reduce=lambda tensor, reduce_op: tensor),
    )
    bar = ProgressBar()
    shown = []
    for idx, loss in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]):
        guard.on_train_batch_end(trainer, None, torch.tensor(loss), None, idx)
        shown.append(bar.get_metrics(trainer, None).get("loss"))
    # the steps between two checks show the mean loss of the steps up to the check before
    assert shown == [None, None, "2.000", "2.000", "2.000", "5.000", "5.000"]


class BarCounts(L.Callback):
    """The count the bar's training task shows after each batch (this runs after the bar)."""

    def __init__(self, bar: ProgressBar) -> None:
        self.bar = bar
        self.shown: list[float] = []

    def on_train_batch_end(self, *args: object) -> None:
        self.shown.append(self.bar.train_progress_bar.completed)


@pytest.fixture
def restores_rich_console() -> Iterator[None]:
    """The bar reconfigures Rich's global console; the default one comes back after the test."""
    yield
    rich.reconfigure()


def test_the_bar_updates_once_a_refresh_interval_and_at_the_last_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restores_rich_console: None
) -> None:
    """A step is 0.03 s on the bar's clock; at 10 refreshes a second, every 4th step updates."""
    clock = itertools.count(0.0, 0.03)
    monkeypatch.setattr(console, "monotonic", lambda: next(clock))
    bar = ProgressBar(refresh_rate=10)
    counts = BarCounts(bar)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=10,
        limit_val_batches=0,
        callbacks=[bar, counts],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    assert counts.shown == [1, 1, 1, 1, 5, 5, 5, 5, 9, 10]
