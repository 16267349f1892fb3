"""cifarlab.sweeps.summary: how a sweep reports its jobs. A failed job is recorded and the sweep
goes on (also under the parallel launchers); summary.csv/.md rank the jobs and are rewritten as each
job starts and ends; a killed sweep leaves its finished jobs and the commands that run the rest.

(What a run writes for TensorBoard is tested in test_callbacks_tensorboard.py.)"""

from __future__ import annotations

import copy
import csv
import json
import math
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cifarlab.errors import CifarlabError
from cifarlab.run.entry import run_entry
from cifarlab.sweeps.plan import job_name
from cifarlab.sweeps.rows import collect
from cifarlab.sweeps.summary import SweepCallback, job_error, write_summary
from cifarlab.sweeps.summary import main as sweep_main

from .conftest import compose_config, run_script, sweep_overrides
from .injected_callbacks import kill_this_process_in_job, target_of
from .sweep_helpers import check_summary, run_sweep


def fake_job(sweep: Path, num: int, name: str, metrics: dict | None, record: dict | None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- {name}\n")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if record is not None:
        (job / "job.json").write_text(json.dumps({"name": name, **record}))


def completed(val: float, test: float, worst: float) -> dict:
    return {
        "status": "completed",
        "val/acc_best": val,
        "test/acc": test,
        "test/loss": 1.0,
        "test/acc_class": {"cat": worst, "dog": 0.9},
        "wall_time_s": 12.0,
    }


def test_summary_ranks_jobs_and_says_what_happened(tmp_path: Path) -> None:
    ok = {"status": "completed", "wall_time_s": 3.0}
    fake_job(tmp_path, 0, "optimizer.lr=0.1", completed(0.5, 0.45, 0.2), ok)
    fake_job(tmp_path, 1, "optimizer.lr=0.01", completed(0.7, 0.66, 0.4), ok)
    diverged = {**completed(0.1, 0.1, 0.0), "test/loss": math.nan}
    fake_job(tmp_path, 2, "optimizer.lr=100.0", diverged, ok)
    fake_job(
        tmp_path,
        3,
        "optimizer.lr=-1",
        None,
        {"status": "failed", "error": "CifarlabError: optimizer.lr=-1 must be positive"},
    )
    fake_job(tmp_path, 4, "optimizer.lr=0.5", None, None)
    (tmp_path / "not_a_job").mkdir()

    rows = write_summary(tmp_path)
    assert [r["job"] for r in rows] == ["1", "0", "2", "3", "4"]
    assert [r["status"] for r in rows] == [
        "completed",
        "completed",
        "diverged",
        "failed",
        "incomplete",
    ]
    assert rows[0]["worst_class"] == "cat" and rows[0]["worst_class_acc"] == 0.4
    assert rows[0]["wall_time_s"] == 3.0
    assert "non-finite" in rows[2]["error"] and "lr=-1" in rows[3]["error"]
    assert rows[4]["overrides"] == "optimizer.lr=0.5"
    with open(tmp_path / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["overrides"] for r in table][:2] == ["optimizer.lr=0.01", "optimizer.lr=0.1"]
    assert table[3]["val/acc_best"] == "" and table[0]["val/acc_best"] == "0.7"
    md = (tmp_path / "summary.md").read_text()
    assert "5 jobs, 3 not completed" in md
    assert md.index("optimizer.lr=0.01") < md.index("optimizer.lr=0.1 ")
    assert collect(tmp_path) == rows


@pytest.fixture
def multirun_job(tmp_path: Path) -> Iterator[DictConfig]:
    """Hydra's state inside job 0 of ``train.py -m optimizer.lr=-1,0.01 model.width=4``."""
    sweep_cmd = ["optimizer.lr=-1,0.01", "model.width=4"]
    OmegaConf.save({"hydra": {"overrides": {"task": sweep_cmd}}}, tmp_path / "multirun.yaml")
    job_dir = tmp_path / "0"
    (job_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(["optimizer.lr=-1", "model.width=4"], job_dir / ".hydra" / "overrides.yaml")
    cfg = compose_config(
        "train",
        ["optimizer.lr=-1", "model.width=4", f"hydra.sweep.dir={tmp_path}"],
        with_hydra=True,
    )
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.runtime.output_dir = str(job_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = None


def failed_return(message: str) -> JobReturn:
    try:
        raise CifarlabError(message)
    except CifarlabError as err:
        error = err
    failed = JobReturn(overrides=["optimizer.lr=-1"], status=JobStatus.FAILED)
    failed.return_value = error
    return failed


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(
    multirun_job: DictConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = Path(multirun_job.hydra.sweep.dir)
    assert job_name() == "optimizer.lr=-1", "only the swept key names the job"
    callback = SweepCallback()
    callback.on_job_start(multirun_job)
    job_return = failed_return("optimizer.lr=-1 must be a positive number, e.g. 0.01.")
    callback.on_job_end(multirun_job, job_return)
    assert job_return.status == JobStatus.COMPLETED and job_return.return_value is None
    record = json.loads((sweep_dir / "0" / "job.json").read_text())
    assert record["status"] == "failed" and record["name"] == "optimizer.lr=-1"
    assert record["error"].startswith("CifarlabError: optimizer.lr=-1 must be a positive")
    callback.on_multirun_end(multirun_job)
    (row,) = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert row["status"] == "failed" and row["overrides"] == "optimizer.lr=-1"
    assert "| optimizer.lr=-1 | failed |" in capsys.readouterr().out

    strict = SweepCallback(isolate_failures=False)
    job_return = failed_return("boom")
    strict.on_job_end(multirun_job, job_return)
    assert job_return.status == JobStatus.FAILED


def test_user_errors_fail_only_their_job_in_a_multirun(multirun_job: DictConfig) -> None:
    def bad(_: DictConfig) -> None:
        raise CifarlabError("optimizer.lr=-1 must be a positive number")

    with pytest.raises(CifarlabError):  # Hydra records it as this job's failure
        run_entry(bad, multirun_job)
    HydraConfig.instance().cfg = None
    with pytest.raises(SystemExit):  # a single run ends with the one-paragraph message
        run_entry(bad, multirun_job)


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


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
    ],
    ids=["joblib", "submitit_local"],
)
def test_parallel_launchers_isolate_failures(
    folder_root: Path, tmp_path: Path, launcher: list[str]
) -> None:
    check_summary(*run_sweep(folder_root, tmp_path, *launcher))


GRID = ["optimizer.lr=0.1,0.01,0.001", "model.width=4"]
JOBS = [[f"optimizer.lr={lr}", "model.width=4"] for lr in ("0.1", "0.01", "0.001")]


def grid_sweep(sweep: Path) -> DictConfig:
    """A sweep folder as Hydra leaves it before its first job (``train.py -m`` over GRID), and
    the config its jobs start from."""
    cfg = compose_config("train", [f"hydra.sweep.dir={sweep}"], with_hydra=True)
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
    overrides = sweep_overrides(folder_root, tmp_path)
    proc = run_script(
        "train.py",
        "-m",
        *[o for o in overrides if "max_epochs" not in o],
        "trainer.max_epochs=1",
        *LEAN,
        "model.width=4",
        "optimizer.lr=0.1,0.01,0.001",
        f"hydra.sweep.dir={sweep}",
        f"+callbacks.kill._target_={target_of(kill_this_process_in_job)}",
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
