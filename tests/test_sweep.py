"""cifarlab.sweeps.summary: a failed job's error through Hydra's public JobReturn API; the summary
as a sweep goes, and what a killed sweep leaves."""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cifarlab.sweeps.summary import SweepCallback, job_error
from cifarlab.sweeps.summary import main as sweep_main

from .conftest import CONF_DIR, quick_overrides, run_script
from .test_review import completed


def test_a_failed_jobs_error_comes_from_hydras_public_return_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = ValueError("optimizer.lr=-1 must be a positive number")
    failed = JobReturn(overrides=["optimizer.lr=-1"], status=JobStatus.FAILED)
    failed.return_value = error
    assert job_error(failed) is error
    assert capsys.readouterr().err == ""  # Hydra's own "Error executing job" line is held back
    completed = JobReturn(overrides=["optimizer.lr=0.1"], status=JobStatus.COMPLETED)
    completed.return_value = 0.9
    with pytest.raises(ValueError, match="did not fail"):
        job_error(completed)


GRID = ["optimizer.lr=0.1,0.01,0.001", "model.width=4"]
JOBS = [[f"optimizer.lr={lr}", "model.width=4"] for lr in ("0.1", "0.01", "0.001")]


def grid_sweep(sweep: Path) -> DictConfig:
    """A sweep folder as Hydra leaves it before its first job (``train.py -m`` over GRID), and
    the config its jobs start from."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", [f"hydra.sweep.dir={sweep}"], return_hydra_config=True)
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.name = "train"
        cfg.hydra.overrides.task = GRID
    sweep.mkdir()
    OmegaConf.save(cfg, sweep / "multirun.yaml")
    return cfg


def start_job(base: DictConfig, num: int) -> DictConfig:
    """Hydra's state inside job ``num``, with the record Hydra writes before the job starts."""
    cfg = copy.deepcopy(base)
    job_dir = Path(cfg.hydra.sweep.dir) / str(num)
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.overrides.task = JOBS[num]
        cfg.hydra.runtime.output_dir = str(job_dir)
        cfg.hydra.job.num = num
    (job_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(JOBS[num], job_dir / ".hydra" / "overrides.yaml")
    HydraConfig.instance().set_config(cfg)
    return cfg


def summary(sweep: Path) -> tuple[dict[str, dict[str, str]], str]:
    with open(sweep / "summary.csv") as f:
        rows = {row["job"]: row for row in csv.DictReader(f)}
    return rows, (sweep / "summary.md").read_text()


def commands(md: str) -> list[str]:
    return md.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()


def test_the_summary_is_rewritten_as_each_job_starts_and_ends(tmp_path: Path) -> None:
    """What a sweep killed at any moment leaves: the jobs that finished, the ones that did not,
    and the commands that run those into the sweep's own folders."""
    sweep = tmp_path / "sweep"
    base, callback = grid_sweep(sweep), SweepCallback()
    try:
        cfg = start_job(base, 0)
        callback.on_job_start(cfg)
        rows, md = summary(sweep)
        assert {job: row["status"] for job, row in rows.items()} == {
            "0": "incomplete",
            "1": "not started",
            "2": "not started",
        }
        assert rows["2"]["overrides"] == "optimizer.lr=0.001"
        assert "## Not finished: 3 of 3 planned jobs" in md
        last = sweep / "0" / "checkpoints" / "last.ckpt"
        assert commands(md) == [
            f"if [ -f {last} ]; then train.py ckpt_path={last}; "
            f"else train.py optimizer.lr=0.1 model.width=4 hydra.run.dir={sweep}/0-rerun; fi",
            f"train.py optimizer.lr=0.01 model.width=4 hydra.run.dir={sweep}/1",
            f"train.py optimizer.lr=0.001 model.width=4 hydra.run.dir={sweep}/2",
            f"python -m cifarlab.sweeps.summary {sweep}",
        ]

        (sweep / "0" / "metrics.json").write_text(json.dumps(completed(0.7, 0.66, 0.4)))
        provenance = {"git_commit": "0123456789abcdef", "git_dirty": True}
        (sweep / "0" / "provenance.json").write_text(json.dumps(provenance))
        callback.on_job_end(cfg, JobReturn(overrides=JOBS[0], status=JobStatus.COMPLETED))
        rows, md = summary(sweep)
        assert rows["0"]["status"] == "completed" and rows["0"]["val/acc_best"] == "0.7"
        assert rows["0"]["commit"] == "0123456789ab (dirty)"
        assert "## Not finished: 2 of 3 planned jobs" in md and len(commands(md)) == 3

        # job 1 was stopped by SIGTERM after its first epoch: it continues from its checkpoint
        cfg = start_job(base, 1)
        callback.on_job_start(cfg)
        last = sweep / "1" / "checkpoints" / "last.ckpt"
        last.parent.mkdir()
        last.write_bytes(b"weights")
        (sweep / "1" / "metrics.json").write_text('{"status": "interrupted"}')
        assert sweep_main([str(sweep)]) == 0  # python -m cifarlab.sweeps.summary <dir>
        rows, md = summary(sweep)
        assert rows["1"]["status"] == "interrupted"
        assert commands(md)[:2] == [
            f"train.py ckpt_path={last}",
            f"train.py optimizer.lr=0.001 model.width=4 hydra.run.dir={sweep}/2",
        ]
    finally:
        HydraConfig.instance().cfg = None


def kill_this_process_in_job(job: int) -> None:
    """Test only, as a callbacks entry (``+callbacks.kill._target_=tests.test_sweep.
    kill_this_process_in_job +callbacks.kill.job=N``): SIGKILLs the sweep's process when job N
    builds its callbacks, as the kernel's OOM killer would. Other jobs get no callback."""
    if HydraConfig.get().job.num == job:
        os.kill(os.getpid(), signal.SIGKILL)


# what a job does beyond training and testing, left out to keep the test short
LEAN = [
    "callbacks.class_figures=null",
    "callbacks.image_grids=null",
    "callbacks.hparams=null",
    "callbacks.curves=null",
    "~logger",
]


def test_a_killed_sweep_keeps_its_finished_jobs_and_says_how_to_run_the_rest(
    folder_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    overrides = [o for o in quick_overrides(folder_root, tmp_path) if "output_dir" not in o]
    proc = run_script(
        "train.py",
        "-m",
        *[o for o in overrides if "max_epochs" not in o],
        "trainer.max_epochs=1",
        *LEAN,
        "model.width=4",
        "optimizer.lr=0.1,0.01,0.001",
        f"hydra.sweep.dir={sweep}",
        "+callbacks.kill._target_=tests.test_sweep.kill_this_process_in_job",
        "+callbacks.kill.job=1",
        cwd=tmp_path,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    rows, md = summary(sweep)
    assert {job: row["status"] for job, row in rows.items()} == {
        "0": "completed",
        "1": "incomplete",
        "2": "not started",
    }
    assert [rows[job]["overrides"] for job in "012"] == [
        "optimizer.lr=0.1",
        "optimizer.lr=0.01",
        "optimizer.lr=0.001",
    ]
    assert "## Not finished: 2 of 3 planned jobs" in md
    rerun, rest, rewrite = commands(md)
    last = sweep / "1" / "checkpoints" / "last.ckpt"
    assert rerun.startswith(f"if [ -f {last} ]; then train.py ckpt_path={last}; else train.py ")
    assert rerun.endswith(f"hydra.run.dir={sweep}/1-rerun; fi")
    assert f"data.root={folder_root}" in rerun and "optimizer.lr=0.01 " in rerun
    assert "optimizer.lr=0.001 " in rest and rest.endswith(f"hydra.run.dir={sweep}/2")
    assert rewrite == f"python -m cifarlab.sweeps.summary {sweep}"
