"""logger=csv (alone or beside TensorBoard), logger=mlflow, logger=wandb (offline)."""

import csv
import importlib.util
from pathlib import Path

import pytest

from cifarlab.errors import CifarlabError
from cifarlab.run import loggers
from cifarlab.run.jobs import train

from .conftest import compose_config, quick_overrides


def test_csv_logger_beside_tensorboard(folder_root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "train", [*quick_overrides(folder_root, tmp_path), "logger=[tensorboard,csv]"]
    )
    metrics = train(cfg)
    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val_acc = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    assert len(val_acc) == 2 and max(val_acc) == pytest.approx(metrics["val/acc_best"], abs=1e-6)
    assert any(r.get("test/acc") for r in rows)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_missing_extra_says_how_to_install_it(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == name else real(m))
    factory = getattr(loggers, f"{name}_logger")
    with pytest.raises(CifarlabError, match=rf"uv sync --extra {name}"):
        factory(str(tmp_path))


@pytest.mark.slow  # importing mlflow takes 10-35 s and creating its SQLite tables up to a minute
def test_mlflow_run_is_read_back_by_mlflows_client(folder_root: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config(
        "train",
        [
            *quick_overrides(folder_root, tmp_path / "run"),
            "logger=mlflow",
            f"logger.mlflow.tracking_uri={uri}",
        ],
    )
    metrics = train(cfg)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cifarlab").experiment_id])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert len(history) == 2
    assert max(m.value for m in history) == pytest.approx(metrics["val/acc_best"], abs=1e-6)
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert run.data.params["model/name"] == "lenet"


@pytest.mark.slow  # importing wandb and starting its service takes 20-40 s
def test_wandb_offline_run_holds_the_metrics(folder_root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "train",
        [*quick_overrides(folder_root, tmp_path), "logger=wandb", "logger.wandb.offline=true"],
    )
    train(cfg)
    (record,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()  # W&B's record log: protobufs with the keys as plain strings
    for key in (b"val/acc", b"train/loss", b"test/acc", b"cifarlab"):
        assert key in data
