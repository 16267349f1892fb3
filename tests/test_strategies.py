"""Divergence and interrupts end the same way under every strategy: one process, ddp_fork (the
workers train, the parent reports) and script-launched ddp (every rank runs train.py).

The DDP runs use ``trainer=ddp_cpu`` (2 CPU processes, gloo) on the tiny folder data.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cifarlab.run.jobs import train
from cifarlab.run.records import record_interrupt
from cifarlab.training.module import ClassifierModule

from .conftest import ROOT, compose_config, quick_overrides, run_script
from .injected_callbacks import READY, HoldBeforeSecondEpoch, target_of


def nan_loss(monkeypatch: pytest.MonkeyPatch, from_epoch: int, rank: int | None = None) -> None:
    """The training loss becomes NaN from ``from_epoch`` on, on ``rank`` only (None: every rank).
    Forked DDP workers inherit the patch."""
    original = ClassifierModule.training_step

    def step(self, data, batch_idx):
        loss = original(self, data, batch_idx)
        hit = self.current_epoch >= from_epoch and rank in (None, self.global_rank)
        return loss * float("nan") if hit else loss

    monkeypatch.setattr(ClassifierModule, "training_step", step)


def ddp_cfg(root: Path, out: Path, *extra: str):
    return compose_config(
        "train",
        [
            *quick_overrides(root, out),
            "model=bn_cnn",
            "model.width=8",
            "trainer=ddp_cpu",
            "data.batch_size=8",
            "trainer.max_epochs=4",
            *extra,
        ],
    )


def test_a_nan_loss_on_one_rank_stops_every_rank_and_tests_the_best_checkpoint(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only rank 1's loss goes NaN, from epoch 1: both ranks stop at the same batch (no rank waits
    in a collective), the forked workers' parent reports it as one process would, and the
    epoch-0 checkpoint, the last one with finite weights, is tested."""
    nan_loss(monkeypatch, from_epoch=1, rank=1)
    metrics = train(ddp_cfg(folder_root, tmp_path))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["status"] == "diverged" and saved["epochs"] == 1
    assert "loss became nan at epoch 1, batch 0" in saved["message"]
    assert saved["test/acc"] > 0.8  # tested on the epoch-0 checkpoint
    for path in (saved["best_ckpt"], saved["last_ckpt"]):
        state = torch.load(path, weights_only=True)
        assert state["epoch"] == 0
        assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


DIVERGING = ["optimizer.lr=1e6", "model=bn_cnn", "model.width=8", "trainer.max_epochs=2"]


def diverging_run(root: Path, tmp_path: Path, name: str, *extra: str) -> tuple[int, dict, str]:
    overrides = [o for o in quick_overrides(root, tmp_path) if "output_dir" not in o]
    proc = run_script(
        "train.py",
        *overrides,
        *DIVERGING,
        *extra,
        f"hydra.run.dir={tmp_path / name}",
        cwd=tmp_path,
    )
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    return proc.returncode, metrics, proc.stdout + proc.stderr


@pytest.mark.slow  # a fresh DDP job in a subprocess; the slowest checks of the default suite
def test_a_diverging_ddp_run_ends_like_one_process(folder_root: Path, tmp_path: Path) -> None:
    """``train.py trainer=ddp_cpu optimizer.lr=1e6 model=bn_cnn`` exits 0 without a traceback and
    writes a metrics.json that says it diverged, as one process does."""
    single = diverging_run(folder_root, tmp_path, "one")
    forked = diverging_run(folder_root, tmp_path, "fork", "trainer=ddp_cpu", "data.batch_size=8")
    for code, metrics, output in (single, forked):
        assert code == 0 and "Traceback" not in output, output[-3000:]
        assert metrics["status"] == "diverged" and "optimizer.lr" in metrics["message"]


@pytest.mark.slow
def test_script_launched_ddp_diverges_on_every_rank_together(
    folder_root: Path, tmp_path: Path
) -> None:
    code, metrics, output = diverging_run(
        folder_root, tmp_path, "ddp", "trainer=ddp_cpu", "trainer.strategy=ddp", "data.batch_size=8"
    )
    assert code == 0 and "Traceback" not in output, output[-3000:]
    assert metrics["status"] == "diverged"
    assert output.count("Training diverged") == 2  # each rank logs it, none hangs


def test_train_py_returns_no_objective_for_a_run_that_did_not_complete(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diverged run has a val/acc_best from its good epochs, but a sweeper must not rank it."""
    spec = importlib.util.spec_from_file_location("train_entry", ROOT / "train.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    objective = entry.main.__wrapped__  # the function under @hydra.main
    cfg = compose_config("train", [*quick_overrides(folder_root, tmp_path / "ok")])
    assert objective(cfg) > 0.5
    nan_loss(monkeypatch, from_epoch=1)
    cfg = compose_config("train", [*quick_overrides(folder_root, tmp_path / "bad")])
    assert objective(cfg) is None
    saved = json.loads((tmp_path / "bad" / "metrics.json").read_text())
    assert saved["status"] == "diverged" and saved["val/acc_best"] > 0.5


def interrupt_held_ddp_fork_run(
    folder_root: Path, tmp_path: Path, interrupt: Callable[[subprocess.Popen], None]
) -> tuple[int, str, Path]:
    """``train.py trainer=ddp_cpu`` (ddp_fork) whose workers both hold before their second epoch
    (injected_callbacks.HoldBeforeSecondEpoch) until ``interrupt(process)`` reaches them; returns
    the exit code, stderr and the run folder."""
    run = tmp_path / "run"
    held = 0

    def interrupt_when_both_hold(line: str, process: subprocess.Popen) -> None:
        nonlocal held
        if line.strip() == READY:
            held += 1
            if held == 2:  # one line from each rank
                interrupt(process)

    proc = run_script(
        "train.py",
        *[o for o in quick_overrides(folder_root, run) if "output_dir" not in o],
        "trainer=ddp_cpu",
        "data.batch_size=8",
        "trainer.max_epochs=3",
        f"hydra.run.dir={run}",
        f"+callbacks.hold._target_={target_of(HoldBeforeSecondEpoch)}",
        f"+callbacks.hold.marker={tmp_path / 'held'}",
        cwd=tmp_path,
        on_line=interrupt_when_both_hold,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )
    return proc.returncode, proc.stderr, run


def check_interrupt_record(run: Path, stderr: str) -> None:
    """metrics.json and the message name the last.ckpt the forked workers wrote (epoch 0)."""
    last = run / "checkpoints" / "last.ckpt"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["status"] == "interrupted" and saved["last_ckpt"] == str(last)
    assert saved["epochs"] == torch.load(last, weights_only=True)["epoch"] + 1 == 1
    assert f"train.py ckpt_path={last}" in stderr and "Traceback" not in stderr


@pytest.mark.slow  # DDP job in a subprocess; 21 s alone
def test_ctrl_c_under_ddp_fork_names_the_last_checkpoint(folder_root: Path, tmp_path: Path) -> None:
    """The forked workers write last.ckpt; the parent, which Ctrl-C reaches with them, must name
    it rather than say there is nothing to resume."""
    code, stderr, run = interrupt_held_ddp_fork_run(
        folder_root, tmp_path, lambda proc: os.killpg(proc.pid, signal.SIGINT)
    )
    assert code == 130, stderr[-3000:]
    check_interrupt_record(run, stderr)


@pytest.mark.slow  # DDP job in a subprocess; 20-35 s
def test_sigterm_to_the_ddp_fork_job_stops_its_workers_and_ends_like_one_process(
    folder_root: Path, tmp_path: Path
) -> None:
    """A cluster's time limit signals the job's own process only, which waits for its forked
    workers and has no Lightning handler of its own: the workers must get the signal, stop at their
    next batch, and the job end as one process does (not killed at once, with no metrics.json)."""
    code, stderr, run = interrupt_held_ddp_fork_run(
        folder_root, tmp_path, lambda proc: proc.send_signal(signal.SIGTERM)
    )
    assert code == 143, stderr[-3000:]
    assert stderr.count("Received SIGTERM") == 2  # Lightning's handler, in each worker
    check_interrupt_record(run, stderr)


def test_only_rank_zero_records_an_interrupt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under script-launched ddp every rank catches the interrupt; one file, one message."""
    for rank in (1, 0):
        trainer = SimpleNamespace(
            is_global_zero=rank == 0, checkpoint_callbacks=[], current_epoch=3
        )
        record_interrupt(trainer, tmp_path, time.perf_counter())
        if rank == 1:
            assert not (tmp_path / "metrics.json").exists() and capsys.readouterr().err == ""
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "interrupted"
    assert capsys.readouterr().err.count("Training was interrupted") == 1
