"""How a sweep reports its jobs: records, failure isolation, summary.csv/.md, launchers.

(What a run writes for TensorBoard is tested in test_callbacks.py.)"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cifarlab.errors import CifarlabError
from cifarlab.run.entry import run_entry
from cifarlab.sweeps.plan import job_name
from cifarlab.sweeps.rows import collect
from cifarlab.sweeps.summary import SweepCallback, write_summary

from .conftest import CONF_DIR, FOLDER_CLASSES, quick_overrides


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
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["optimizer.lr=-1", "model.width=4", f"hydra.sweep.dir={tmp_path}"],
            return_hydra_config=True,
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
    return JobReturn(overrides=["optimizer.lr=-1"], status=JobStatus.FAILED, _return_value=error)


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


ROOT = Path(__file__).resolve().parents[1]
GOOD, DIVERGED, FAILED = "optimizer.lr=0.01", "optimizer.lr=1000000.0", "optimizer.lr=-1"


def run_sweep(folder_root: Path, base: Path, *extra: str) -> tuple[Path, str]:
    """train.py -m over a good, a diverging (lr 1e6) and a failing (lr -1) job; 1 epoch each."""
    sweep_dir = base / "multirun"
    overrides = quick_overrides(folder_root, base)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            *extra,
            "model=lenet",
            "model.width=4",
            "optimizer.lr=0.01,1e6,-1",
            f"hydra.sweep.dir={sweep_dir}",
            *[o for o in overrides if "output_dir" not in o and "max_epochs" not in o],
            "trainer.max_epochs=1",
        ],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir, proc.stdout


def check_summary(sweep_dir: Path, stdout: str) -> None:
    """All three jobs have a row that says what happened, best first, also printed."""
    with open(sweep_dir / "summary.csv") as f:
        rows = {row["overrides"]: row for row in csv.DictReader(f)}
    assert set(rows) == {GOOD, DIVERGED, FAILED}
    assert rows[GOOD]["status"] == "completed" and float(rows[GOOD]["val/acc_best"]) > 0
    assert rows[GOOD]["worst_class"] in FOLDER_CLASSES and float(rows[GOOD]["wall_time_s"]) > 0
    assert rows[DIVERGED]["status"] == "diverged" and "non-finite" in rows[DIVERGED]["error"]
    assert rows[FAILED]["status"] == "failed"
    assert "optimizer.lr=-1 must be a positive number" in rows[FAILED]["error"]
    assert next(iter(rows)) == GOOD, "best first"
    assert "Sweep summary" in stdout and f"| {GOOD} | completed |" in stdout
    assert (sweep_dir / "summary.md").read_text().count(f"| {FAILED} | failed |") == 1
    failed_dir = Path(rows[FAILED]["output_dir"])
    record = json.loads((failed_dir / "job.json").read_text())
    assert record["status"] == "failed" and "Traceback" in record["traceback"]


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


def compose_with_hydra(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_launcher_and_search_configs_compose() -> None:
    slurm = compose_with_hydra(["hydra/launcher=slurm"]).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1
    joblib = compose_with_hydra(["hydra/launcher=joblib"]).hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher")
    local = compose_with_hydra(["hydra/launcher=submitit_local"]).hydra.launcher
    assert local._target_.endswith("LocalLauncher")
    search = compose_with_hydra(["hparams_search=optuna_lr_width"])
    assert search.hydra.mode == RunMode.MULTIRUN
    callbacks = compose_with_hydra([]).hydra.callbacks
    assert callbacks.sweep._target_ == "cifarlab.sweeps.summary.SweepCallback"
