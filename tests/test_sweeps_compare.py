"""cifarlab.sweeps.compare: mean +- std over seeds, one line per setting, in the summary of a sweep
over seeds and for runs compared by hand."""

import csv
import json
import statistics
from pathlib import Path

import pytest

from cifarlab.sweeps import compare

from .conftest import run_script, sweep_overrides


@pytest.mark.slow  # 13-52 s; moved out of the default suite to keep it under 5 minutes
def test_sweep_over_seeds_summarizes_each_setting(
    folder_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sweep = tmp_path / "sweep"
    proc = run_script(
        "train.py",
        "-m",
        "seed=1,2,3",
        "model.width=2,6",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        *sweep_overrides(folder_root, tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_width: dict[str, list[float]] = {}
    for job in sweep.glob("*/metrics.json"):
        overrides = (job.parent / ".hydra" / "overrides.yaml").read_text()
        width = "2" if "model.width=2" in overrides else "6"
        by_width.setdefault(width, []).append(json.loads(job.read_text())["val/acc_best"])
    with open(sweep / "summary.csv") as f:
        lines = {row["setting"]: row for row in csv.DictReader(f)}
    assert set(lines) == {"model.width=2", "model.width=6"}
    for width, values in by_width.items():
        line = lines[f"model.width={width}"]
        assert line["n"] == "3" and line["seeds"] == "1 2 3"
        assert float(line["val/acc_best_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(line["val/acc_best_std"]) == pytest.approx(statistics.stdev(values))
    best = max(by_width, key=lambda w: statistics.fmean(by_width[w]))
    summary = (sweep / "summary.md").read_text()
    lines_md = summary.splitlines()
    first_line = lines_md[lines_md.index("| --- | --- | --- | --- | --- | --- |") + 1]
    assert first_line.startswith(f"| model.width={best} | 3 |")
    assert len((sweep / "jobs.csv").read_text().splitlines()) == 1 + 6
    # runs compared by hand: the same table
    assert compare.main([str(sweep)]) == 0
    assert f"| model.width={best} | 3 |" in capsys.readouterr().out
    # jobs 0 and 2 share model.width=2 (seeds 1 and 2): one setting of two runs
    assert compare.main([str(sweep / "0"), str(sweep / "2")]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 1 settings" in out and "| (all the same) | 2 |" in out
