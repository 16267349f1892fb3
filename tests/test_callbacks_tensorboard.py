"""The TensorBoard review callbacks (cifarlab.callbacks): what a run writes, the confusion matrix
they count (also across DDP processes), and the public writer the HParams tab goes through."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import get_object
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.data import DataLoader, TensorDataset

from cifarlab.callbacks import class_figures
from cifarlab.callbacks.class_figures import ClassFigures
from cifarlab.callbacks.hparams import HParamsLogger
from cifarlab.run.jobs import train
from cifarlab.run.loggers import tensorboard_logger
from cifarlab.run.resume import EARLIER_TARGETS

from .conftest import FOLDER_CLASSES, compose_config, quick_overrides
from .figure_helpers import PREDICTIONS, RUN_IMAGE_TAGS, TARGETS, hand_counts


def events(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(
        str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def trained_run(folder_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("review_run")
    cfg = compose_config(
        "train", [*quick_overrides(folder_root, out), "model=bn_cnn", "model.width=8"]
    )
    train(cfg)
    return out


def test_run_logs_scalars_figures_and_image_grids(trained_run: Path) -> None:
    acc = events(trained_run / "tensorboard")
    scalars = set(acc.Tags()["scalars"])
    for stage in ("val", "test"):
        assert {f"{stage}/acc_class/{c}" for c in FOLDER_CLASSES} <= scalars
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc"} <= scalars
    assert any(tag.startswith("lr-") for tag in scalars)
    assert "hp_metric" not in scalars
    images = acc.Tags()["images"]
    assert set(images) >= RUN_IMAGE_TAGS
    # validation figures at each of the 2 epochs, each a real PNG of some size
    assert len(acc.Images("val/confusion_matrix")) == 2
    for tag in RUN_IMAGE_TAGS:
        image = acc.Images(tag)[-1]
        assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 200


def test_per_class_curves_share_one_chart_in_custom_scalars(trained_run: Path) -> None:
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = events(trained_run / "tensorboard")
    assert "custom_scalars__config__" in acc.PluginTagToContent("custom_scalars")
    raw = acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(raw)
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts["val"] == [r"^val/acc_class/"] and charts["test"] == [r"^test/acc_class/"]


def test_hparams_session_holds_typed_hparams_and_final_metrics(trained_run: Path) -> None:
    acc = events(trained_run / "tensorboard")
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    hparams = {k: v.WhichOneof("kind") for k, v in start.hparams.items()}
    assert hparams["lr"] == hparams["width"] == hparams["seed"] == "number_value"
    assert hparams["model"] == hparams["optimizer"] == hparams["classes"] == "string_value"
    assert start.hparams["model"].string_value == "bn_cnn"
    assert start.hparams["width"].number_value == 8
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"val/acc_best", "test/acc"} <= metric_tags
    scalars = set(acc.Tags()["scalars"])
    assert metric_tags <= scalars, "every HParams metric column must have a logged value"


class FixedLogits(L.LightningModule):
    """Its logits are the batch's inputs, so a test decides every prediction."""

    def __init__(self, class_names: list[str]) -> None:
        super().__init__()
        self.class_names = class_names

    def validation_step(self, batch: Any, _: int) -> torch.Tensor:
        return batch[0]

    def test_step(self, batch: Any, _: int) -> torch.Tensor:
        return batch[0]


NAMES = ["a", "b", "c", "d"]


def fixed_batches() -> DataLoader:
    logits = torch.nn.functional.one_hot(torch.tensor(PREDICTIONS), len(NAMES)).float()
    return DataLoader(TensorDataset(logits, torch.tensor(TARGETS)), batch_size=3)


def drawn_matrices(monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
    """Makes rank 0 save each matrix and per-class accuracies it draws into ``out``/<stage>.pt."""
    confusion, per_class = class_figures.confusion_figure, class_figures.per_class_figure
    seen: dict[str, Any] = {}

    def record_confusion(matrix: torch.Tensor, names: list[str], title: str) -> Any:
        seen["matrix"] = matrix.clone()
        return confusion(matrix, names, title)

    def record_per_class(acc: dict, title: str) -> Any:
        stage = title.split()[0]
        torch.save({"matrix": seen["matrix"], "per_class": acc}, out / f"{stage}.pt")
        return per_class(acc, title)

    monkeypatch.setattr(class_figures, "confusion_figure", record_confusion)
    monkeypatch.setattr(class_figures, "per_class_figure", record_per_class)


def check_drawn(out: Path, stage: str) -> None:
    drawn = torch.load(out / f"{stage}.pt", weights_only=True)
    assert torch.equal(drawn["matrix"], hand_counts(TARGETS, PREDICTIONS, len(NAMES)))
    assert drawn["per_class"] == {"a": 0.75, "b": 1.0, "c": 0.6, "d": None}


def class_figures_run(tmp_path: Path, **trainer: Any) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=tensorboard_logger(str(tmp_path), version="run"),
        callbacks=[ClassFigures()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer,
    )


def test_class_figures_draw_the_counts_of_all_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn_matrices(monkeypatch, tmp_path)
    trainer = class_figures_run(tmp_path, devices=1)
    trainer.validate(FixedLogits(NAMES), fixed_batches())
    trainer.test(FixedLogits(NAMES), fixed_batches())
    check_drawn(tmp_path, "val")
    check_drawn(tmp_path, "test")
    images = events(tmp_path / "tensorboard" / "run").Tags()["images"]
    assert {"val/confusion_matrix", "test/per_class_accuracy"} <= set(images)


def test_class_figures_sum_the_counts_of_every_ddp_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two forked processes each see half of the batches (Lightning's DistributedSampler);
    rank 0 draws the counts of both."""
    drawn_matrices(monkeypatch, tmp_path)
    trainer = class_figures_run(tmp_path, devices=2, strategy="ddp_fork")
    trainer.test(FixedLogits(NAMES), fixed_batches())
    check_drawn(tmp_path, "test")


def test_hparams_go_through_the_writers_public_file_writer(tmp_path: Path) -> None:
    """SummaryWriter.file_writer (public; torch's add_hparams writes through it) is the open
    writer of the run's event file from the writer's creation until Lightning's finalize."""
    logger = tensorboard_logger(str(tmp_path), version="run")
    writer = logger.experiment
    assert writer.file_writer is not None
    trainer = SimpleNamespace(is_global_zero=True, loggers=[logger], max_epochs=2)
    module = SimpleNamespace(
        hparams={
            "model": {"name": "lenet", "width": 6},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "class_names": ["cat", "dog"],
        }
    )
    HParamsLogger().on_fit_start(trainer, module)  # type: ignore[arg-type]
    writer.add_scalar("val/acc", 0.5, 0)
    logger.finalize("success")
    assert writer.file_writer is None
    assert len(list((tmp_path / "tensorboard" / "run").glob("events.out.tfevents.*"))) == 1
    acc = events(tmp_path / "tensorboard" / "run")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["lr"].number_value == 0.1 and start.hparams["max_epochs"].number_value == 2
    assert "val/acc" in acc.Tags()["scalars"]


# the cifarlab _target_s in the run config that every checkpoint written so far stores; resuming
# one instantiates them from that config, so they must keep resolving wherever the code moves
STORED_TARGETS = (
    "cifarlab.callbacks.early_stopping",
    "cifarlab.callbacks.ClassFigures",
    "cifarlab.callbacks.ImageGrids",
    "cifarlab.callbacks.HParamsLogger",
    "cifarlab.callbacks.tensorboard_logger",
    "cifarlab.curves.EpochCurves",
    "cifarlab.console.ProgressBar",
    "cifarlab.console.NetSummary",
)


def test_targets_stored_in_earlier_checkpoints_still_resolve() -> None:
    for target in STORED_TARGETS:
        assert callable(get_object(EARLIER_TARGETS.get(target, target))), target
