"""Resuming on another machine or with the same command, last.ckpt every epoch, and runs
without validation in a sweep's summary."""

from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifarlab import callbacks
from cifarlab.errors import CifarlabError
from cifarlab.reliability import AtomicCheckpointIO, resume_config
from cifarlab.run import train
from cifarlab.sweep import job_row

from .conftest import ROOT, compose_config, quick_overrides, run_script


def overrides_for(root: Path, out: Path, *extra: str) -> list[str]:
    """quick_overrides with ``extra`` replacing its value of a key."""
    keys = {o.split("=", 1)[0] for o in extra}
    return [*[o for o in quick_overrides(root, out) if o.split("=", 1)[0] not in keys], *extra]


def test_resume_takes_its_own_command_and_setup_keys_and_refuses_other_changes(
    folder_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    command = overrides_for(folder_root, run, "trainer.max_epochs=1", "model.width=4")
    train(compose_config("train", command))
    last = run / "checkpoints" / "last.ckpt"

    same = [*command, f"ckpt_path={last}"]  # the natural resume: the same command plus ckpt_path
    assert resume_config(compose_config("train", same), same).paths.output_dir == str(run)

    for changed in ("optimizer.lr=0.5", "model.width=8", "trainer.max_epochs=3", "model=fc512"):
        refused = [*same, changed]
        with pytest.raises(CifarlabError, match=f"{changed} cannot apply"):
            resume_config(compose_config("train", refused), refused)

    # the run and its data moved to another machine, which runs it on its one device
    moved, data = tmp_path / "elsewhere" / "run", tmp_path / "elsewhere" / "data"
    shutil.copytree(run, moved)
    shutil.copytree(folder_root, data)
    relocated = [
        *overrides_for(folder_root, moved, f"data.root={data}", "trainer.devices=1"),
        "trainer.max_epochs=1",
        "model.width=4",
        f"ckpt_path={moved / 'checkpoints' / 'last.ckpt'}",
    ]
    resumed = resume_config(compose_config("train", relocated), relocated)
    assert resumed.paths.output_dir == str(moved) and resumed.data.root == str(data)
    assert resumed.trainer.default_root_dir == str(moved)
    assert resumed.callbacks.last_checkpoint.dirpath == str(moved / "checkpoints")
    assert resumed.logger.tensorboard.save_dir == str(moved)
    assert resumed.model.width == 4 and resumed.trainer.max_epochs == 1


@pytest.mark.slow
def test_a_moved_run_resumes_through_train_py_where_it_now_is(
    folder_root: Path, tmp_path: Path
) -> None:
    run, moved = tmp_path / "run", tmp_path / "moved"
    command = overrides_for(folder_root, run, "trainer.max_epochs=2")
    train(compose_config("train", [*overrides_for(folder_root, run, "trainer.max_epochs=1")]))
    shutil.copytree(run, moved)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    proc = run_script(
        "train.py",
        *[o.replace(str(run), str(moved)) for o in command if "max_epochs" not in o],
        "trainer.max_epochs=1",
        f"ckpt_path={moved / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'record'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((moved / "metrics.json").read_text())["status"] == "completed"
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_a_resumed_sweep_job_logs_into_its_own_tensorboard_folder(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a sweep a job's TensorBoard folder is named by its overrides; resumed as a single run,
    the job must go on logging (and purge) there, not in the sweep job's parent folder."""
    from .test_reliability import keyboard_interrupt, stop_during

    name = "optimizer.lr=0.01"
    monkeypatch.setattr(callbacks, "job_name", lambda: name)
    stop_during(monkeypatch, epoch=1, batch=1, stop=keyboard_interrupt)
    with pytest.raises(SystemExit):
        train(compose_config("train", overrides_for(folder_root, tmp_path, "trainer.max_epochs=3")))
    monkeypatch.undo()  # the resumed run is not in a multirun
    train(compose_config("train", [f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"]))
    board = tmp_path / "tensorboard"
    folders = {p.parent.relative_to(board) for p in board.rglob("events.out.tfevents*")}
    assert folders == {Path(name)}
    events = EventAccumulator(str(board / name))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert len(steps) == 3 and len(set(steps)) == 3  # one point per epoch, none twice


def saved_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The file names every checkpoint write goes to, in order."""
    names: list[str] = []
    atomic_save = AtomicCheckpointIO.save_checkpoint

    def recording_save(self, checkpoint, path, storage_options=None):
        names.append(Path(path).name)
        atomic_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording_save)
    return names


@pytest.mark.parametrize("validation", ["data.val_size=24", "data.val_size=0"])
def test_last_ckpt_holds_every_epoch_improved_or_not_and_without_validation(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validation: str
) -> None:
    """The tiny task peaks at epoch 0, so epochs 1 and 2 improve nothing."""
    names = saved_names(monkeypatch)
    metrics = train(
        compose_config(
            "train", overrides_for(folder_root, tmp_path, validation, "trainer.max_epochs=3")
        )
    )
    assert names.count("last.ckpt") == 3
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert metrics["last_ckpt"] == str(tmp_path / "checkpoints" / "last.ckpt")
    if validation.endswith("=0"):
        assert metrics["val/acc_best"] is None and metrics["status"] == "completed"


def test_lightning_requirement_is_the_range_the_code_runs_on() -> None:
    """``weights_only=`` in Trainer.fit/test (used by run.py) came with Lightning 2.6."""
    pyproject = (ROOT / "pyproject.toml").read_text()  # no tomllib before Python 3.11
    (lightning,) = [Requirement(r) for r in re.findall(r'^\s*"(lightning[^"]*)"', pyproject, re.M)]
    assert Version(L.__version__) in lightning.specifier
    assert "2.5.5" not in lightning.specifier and "3.0.0" not in lightning.specifier
    assert "weights_only" in inspect.signature(L.Trainer.fit).parameters
    lock = (ROOT / "uv.lock").read_text()
    locked = lock.split('name = "lightning"\nversion = "', 1)[1].split('"', 1)[0]
    assert locked in lightning.specifier


@pytest.mark.parametrize("no_validation", ["data.val_size=0", "trainer.limit_val_batches=0"])
def test_a_run_without_validation_is_completed_in_the_sweep_summary(
    folder_root: Path, tmp_path: Path, no_validation: str
) -> None:
    train(
        compose_config(
            "train", overrides_for(folder_root, tmp_path, no_validation, "trainer.max_epochs=1")
        )
    )
    row = job_row(tmp_path)
    assert row["status"] == "completed" and row["val/acc_best"] is None
    assert row["test/acc"] is not None and row["error"] == ""
