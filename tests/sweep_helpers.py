"""A real ``train.py -m`` over a good, a diverging and a failing job, and what its summary must
say: for the sweep tests and the TensorBoard tests, which review the same kind of sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .conftest import FOLDER_CLASSES, run_script, sweep_overrides

GOOD, DIVERGED, FAILED = "optimizer.lr=0.01", "optimizer.lr=1000000.0", "optimizer.lr=-1"


def run_sweep(folder_root: Path, base: Path, *extra: str) -> tuple[Path, str]:
    """train.py -m over a good, a diverging (lr 1e6) and a failing (lr -1) job; 1 epoch each."""
    sweep_dir = base / "multirun"
    proc = run_script(
        "train.py",
        "-m",
        *extra,
        "model=lenet",
        "model.width=4",
        "optimizer.lr=0.01,1e6,-1",
        f"hydra.sweep.dir={sweep_dir}",
        *[o for o in sweep_overrides(folder_root, base) if "max_epochs" not in o],
        "trainer.max_epochs=1",
        cwd=base,
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
    assert "optimizer.lr=-1 must be a number > 0" in rows[FAILED]["error"]
    assert next(iter(rows)) == GOOD, "best first"
    assert "Sweep summary" in stdout and f"| {GOOD} | completed |" in stdout
    assert (sweep_dir / "summary.md").read_text().count(f"| {FAILED} | failed |") == 1
    failed_dir = Path(rows[FAILED]["output_dir"])
    record = json.loads((failed_dir / "job.json").read_text())
    assert record["status"] == "failed" and "Traceback" in record["traceback"]
