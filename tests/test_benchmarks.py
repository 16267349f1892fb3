"""The CPU paths of the GPU check and the timed fastnet (benchmarks/): guarded parts, the
prerequisites line, what a timed run leaves out, and the compile warm-up that timed runs reuse;
the pruning comparison's arithmetic."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tarfile
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelSummary, ProgressBar
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from cifarlab.run.build import build_fit_trainer

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check
import gpu_prepare
import pruning_savings
import time_fastnet
from gpu_prerequisites import prerequisites
from timing_callbacks import AirbenchClock


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_compiler_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """$CC and $CXX name a compiler wherever PATH points: the tests look on PATH alone."""
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)


def test_prerequisites_line_says_what_torch_compile_lacks(
    tmp_path: Path, no_compiler_env: None
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = prerequisites(path=str(empty), include_dir=str(empty))
    line = bare.line()
    assert line.startswith(f"prerequisites: torch {torch.__version__}, triton ")
    assert "C compiler missing, C++ compiler missing, Python.h missing" in line
    reason = bare.compile_missing("cuda")
    assert reason == (
        "torch.compile needs a C compiler (none of $CC, gcc, clang, cc on PATH) and Python.h "
        f"(not in {empty})"
    )
    assert "C++ compiler (none of $CXX, g++" in bare.compile_missing("cpu")

    tools = tmp_path / "tools"
    tools.mkdir()
    gcc, gxx = executable(tools / "gcc"), executable(tools / "g++")
    (tools / "Python.h").write_text("")
    ready = prerequisites(path=str(tools), include_dir=str(tools))
    assert f"C compiler {gcc}, C++ compiler {gxx}, Python.h {tools / 'Python.h'}" in ready.line()
    assert ready.compile_missing("cuda") is None and ready.compile_missing("cpu") is None


def test_a_part_that_fails_is_recorded_the_next_runs_and_the_tables_follow_each_part(
    tmp_path: Path, folder_root: Path, no_compiler_env: None
) -> None:
    """Part 1 raises; part 2 (the GPU tests, called without pytest) finds part 1's error
    already in both files on disk and runs; part 3 needs torch.compile, which lacks a compiler
    and Python.h here, and is skipped with that reason."""
    out = tmp_path / "out"
    args = argparse.Namespace(
        device="cpu", root=folder_root, work=tmp_path / "work", without_pytest=True
    )
    report = gpu_check.Report(out, ["prerequisites: ..."], args)
    on_disk_during_part_2: dict[str, str] = {}

    def failing(report: gpu_check.Report) -> None:
        raise ValueError("the device fell over")

    def tests_after_reading_the_files(report: gpu_check.Report) -> dict:
        on_disk_during_part_2["md"] = (out / "gpu_check.md").read_text()
        on_disk_during_part_2["json"] = (out / "gpu_check.json").read_text()
        return gpu_check.gpu_tests(args, report)

    def compiled(report: gpu_check.Report) -> None:
        raise AssertionError("a compiled part ran without a compiler")

    parts = [
        gpu_check.Part("overhead", "cifarlab vs raw loop", failing),
        gpu_check.Part("gpu_tests", "GPU tests", tests_after_reading_the_files),
        gpu_check.Part("fast", "bf16 + channels_last + compile", compiled, compiles=True),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = prerequisites(path=str(empty), include_dir=str(empty))
    gpu_check.run_parts(parts, report, gpu_check.Budget(60), bare, "cpu")

    error_row = "| cifarlab vs raw loop | error after"
    assert error_row in on_disk_during_part_2["md"]
    assert "ValueError: the device fell over" in on_disk_during_part_2["md"]
    assert "the device fell over" in on_disk_during_part_2["json"]
    table = (out / "gpu_check.md").read_text()
    assert error_row in table
    assert (
        "| GPU tests | 2 skipped (needs a CUDA GPU), run without pytest | all pass | yes |" in table
    )
    assert "| bf16 + channels_last + compile | skipped: torch.compile needs a C++ compiler" in table
    saved = json.loads((out / "gpu_check.json").read_text())
    assert [outcome["status"] for outcome in saved["parts"].values()] == [
        "error",
        "done",
        "skipped",
    ]
    assert saved["gpu_tests"]["cases"] == {"lenet": "skipped", "bn_cnn-augment-bf16": "skipped"}


def test_parts_after_the_budget_are_skipped_and_say_so(tmp_path: Path) -> None:
    args = argparse.Namespace(device="cpu")
    report = gpu_check.Report(tmp_path, [], args)
    ran = []
    part = gpu_check.Part("ddp", "trainer=ddp on 1 device", lambda report: ran.append(1))
    gpu_check.run_parts([part], report, gpu_check.Budget(0), prerequisites(), "cpu")
    assert not ran
    assert (
        "| trainer=ddp on 1 device | skipped: time budget of 0 s spent |"
        in (tmp_path / "gpu_check.md").read_text()
    )


def test_the_budget_default_leaves_the_device_call_room() -> None:
    """docs/benchmarks.md runs the check in a device call of timeout_s=600, with the install
    and the unpacking before it and the last part's run after the budget."""
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    assert "timeout_s=600" in docs
    assert gpu_check.BUDGET_S <= 600 - 150


def test_a_timed_run_leaves_out_all_but_training_and_testing(folder_root: Path) -> None:
    cfg = time_fastnet.timed_config(folder_root, Path("unused"), time_fastnet.EPOCHS, [])
    assert cfg.trainer.max_epochs == 8 and cfg.model.name == "fastnet"
    assert cfg.data.eval_batch_size == cfg.data.batch_size == 2000
    trainer = build_fit_trainer(cfg, record_provenance=False)
    assert trainer.loggers == []
    kinds = {type(callback).__name__ for callback in trainer.callbacks}
    # the clock, and cifarlab's safety callbacks, which write only into checkpoints
    safety = {"ConfigInCheckpoint", "RandomStates", "ResumableTrainingState", "DivergenceGuard"}
    assert kinds == {"AirbenchClock", *safety}
    assert not any(
        isinstance(c, Checkpoint | ModelSummary | ProgressBar) for c in trainer.callbacks
    )
    assert any(isinstance(c, AirbenchClock) for c in trainer.callbacks)


@pytest.mark.slow  # about 17 s on 2 CPU cores, most of it dynamo tracing fastnet
def test_timed_runs_reuse_the_warm_up_compilation_and_write_nothing_else(
    folder_root: Path, tmp_path: Path
) -> None:
    """torch.compile with the eager backend captures the same graphs as on a GPU (without
    generating code): the warm-up compiles them, the timed runs compile none."""
    torch.compiler.reset()  # graphs of earlier tests in this process would serve the warm-up
    time_fastnet.main(
        [
            "--root",
            str(folder_root),
            "--runs",
            "1",
            "--epochs",
            "1",
            "--smoke",
            "--out",
            str(tmp_path),
            "--compile-backend",
            "eager",
            "trainer=cpu",
            "model.compile=true",
        ]
    )
    torch.compiler.reset()
    runs = json.loads((tmp_path / "time_fastnet.json").read_text())
    assert len(runs) == 2
    assert runs[0]["graphs"] >= 2  # training, and the test without gradients
    assert runs[1]["graphs"] == 0 and runs[1]["recompiles"] == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["time_fastnet.json", "time_fastnet.md"]


def test_compile_watch_counts_graphs_and_the_table_names_a_timed_run_that_compiled() -> None:
    torch.compiler.reset()
    compiled = torch.compile(lambda x: torch.sin(x) * 2, backend="eager")
    x = torch.randn(4, requires_grad=True)
    with time_fastnet.CompileWatch() as first:
        compiled(x)
    with time_fastnet.CompileWatch() as again:
        compiled(x)
    with time_fastnet.CompileWatch() as other, torch.no_grad():
        compiled(x)
    torch.compiler.reset()
    assert (first.graphs, first.recompiles) == (1, [])
    assert (again.graphs, again.recompiles) == (0, [])
    assert other.graphs == 1 and len(other.recompiles) == 1
    assert "grad_mode" in time_fastnet.first_guard_failure(other.recompiles[0])

    def run(graphs: int, recompiles: list[str]) -> dict:
        times = {"train_s": 1.0, "test_s": 0.5, "airbench_s": 1.5, "setup_s": 0.1}
        return {
            **times,
            "acc": 90.0,
            "acc_no_tta": 89.0,
            "graphs": graphs,
            "recompiles": recompiles,
        }

    text = time_fastnet.table([run(3, []), run(0, []), run(1, other.recompiles)])
    assert "| mean [min, max] of 2 |" in text
    assert "timed run 2 compiled 1 graph(s) (recompiles: " in text and "grad_mode" in text
    assert "timed run 1" not in text


def test_the_data_repacked_for_the_device_holds_the_same_files(tmp_path: Path) -> None:
    zipped = tmp_path / "data.zip"
    files = {
        f"cifar10-jpg/train/cat/{i:04d}.jpg": os.urandom(50) + b"header" * 50 for i in range(5)
    }
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.mkdir("cifar10-jpg/")
        for name, data in files.items():
            archive.writestr(name, data)
    packed = tmp_path / "data.tar.gz"
    gpu_prepare.repack(zipped, packed)
    with tarfile.open(packed) as archive:
        unpacked = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    assert unpacked == files
    assert packed.stat().st_size < zipped.stat().st_size  # the shared bytes compress


def study_run(seconds: list[float], states: list[TrialState], values: list[float]) -> list:
    """Trials run one after another from a fixed moment, each taking its ``seconds``."""
    trials, clock = [], datetime(2026, 1, 1)
    for number, (duration, state, value) in enumerate(zip(seconds, states, values, strict=True)):
        end = clock + timedelta(seconds=duration)
        trials.append(
            FrozenTrial(
                number=number,
                state=state,
                value=value,
                datetime_start=clock,
                datetime_complete=end,
                params={"lr": 0.1 * (number + 1)},
                distributions={"lr": FloatDistribution(0.01, 1.0)},
                user_attrs={"test/acc": value - 0.01},
                system_attrs={},
                intermediate_values={},
                trial_id=number,
            )
        )
        clock = end
    return trials


def test_pruning_savings_compares_elapsed_times_and_best_complete_trials() -> None:
    complete, pruned = TrialState.COMPLETE, TrialState.PRUNED
    with_pruner = study_run(
        [10, 10, 2, 2, 2], [complete, complete, pruned, pruned, pruned], [0.5, 0.6, 0.9, 0.2, 0.2]
    )  # a pruned trial's value is not its best
    without = study_run([10, 10, 10, 10, 10], [complete] * 5, [0.5, 0.6, 0.7, 0.2, 0.2])
    rows = pruning_savings.savings_table(with_pruner, without, every=2, maximize=True)[2:]
    assert [row.split(" | ")[:5] for row in rows] == [
        ["| 2", "20 s", "20 s", "**0.0%**", "2 / 0"],
        ["| 4", "24 s", "40 s", "**40.0%**", "2 / 2"],
        ["| 5", "26 s", "50 s", "**48.0%**", "2 / 3"],
    ]
    assert "0.6000 / 0.5900 (trial 1: 0.2)" in rows[-1]
    assert rows[-1].endswith("0.7000 / 0.6900 (trial 2: 0.3) |")
