"""Mean +- std over seeds: one line per setting, for a sweep or for runs made separately.

``uv run python -m cifarlab.sweeps.compare <run or sweep dirs>`` prints the table; a sweep that
varies ``seed`` gets the same table in its summary.md/summary.csv (cifarlab.sweeps.summary). A
*setting* is what sets a job apart from the others compared with it: its command-line overrides
whose values differ between the jobs, ``seed`` left out. The best setting is the one with the
highest mean ``val/acc_best``; ``test/acc`` is shown beside it, never used to choose.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cifarlab.review import tables
from cifarlab.review.tables import markdown_table
from cifarlab.sweeps.job_files import override_values

SEED_KEY = "seed"
METRICS = ("val/acc_best", "test/acc")
COLUMNS = (
    "setting",
    "n",
    "val/acc_best_mean",
    "val/acc_best_std",
    "test/acc_mean",
    "test/acc_std",
    "not_completed",
    "seeds",
)


def varies_seed(job_dirs: Sequence[Path]) -> bool:
    seeds = {override_values(d).get(SEED_KEY) for d in job_dirs}
    return len(seeds) > 1


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group_by_setting(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One line per setting (overrides that differ between rows, seed left out), best mean first.

    Each row needs ``output_dir`` (a job folder), ``status`` and the METRICS, as
    ``cifarlab.sweeps.rows.job_row`` gives them.
    """
    overrides = [override_values(Path(r["output_dir"])) for r in rows]
    keys = sorted({k for o in overrides for k in o} - {SEED_KEY})
    differing = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    groups: dict[str, list[tuple[Mapping[str, Any], dict[str, str]]]] = {}
    for row, o in zip(rows, overrides, strict=True):
        setting = ",".join(f"{k}={o[k]}" for k in differing if k in o) or "(all the same)"
        groups.setdefault(setting, []).append((row, o))
    lines = []
    for setting, members in groups.items():
        done = [(r, o) for r, o in members if r["status"] == "completed"]
        line: dict[str, Any] = {"setting": setting, "n": len(done)}
        for metric in METRICS:
            values = [r[metric] for r, _ in done if r[metric] is not None]
            line[f"{metric}_mean"], line[f"{metric}_std"] = _mean_std(values)
        line["not_completed"] = len(members) - len(done)
        line["seeds"] = " ".join(sorted(o.get(SEED_KEY, "default") for _, o in done))
        lines.append(line)
    mean = "val/acc_best_mean"
    return sorted(lines, key=lambda x: -x[mean] if x[mean] is not None else math.inf)


def _pm(line: Mapping[str, Any], metric: str) -> str:
    mean, std = line[f"{metric}_mean"], line[f"{metric}_std"]
    return "" if mean is None else f"{mean:.4f} +- {std:.4f}"


def markdown(lines: Sequence[Mapping[str, Any]]) -> str:
    header = ["setting", "n", "val/acc_best", "test/acc", "not completed", "seeds"]
    return markdown_table(
        header,
        (
            [
                x["setting"].replace("|", "\\|"),
                str(x["n"]),
                _pm(x, "val/acc_best"),
                _pm(x, "test/acc"),
                str(x["not_completed"]),
                x["seeds"],
            ]
            for x in lines
        ),
    )


def csv_text(lines: Sequence[Mapping[str, Any]]) -> str:
    return tables.csv_text(COLUMNS, lines)


def job_dirs_of(paths: Sequence[str]) -> list[Path]:
    """Run folders as given, and every job folder of a sweep folder."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.json").is_file() or (p / ".hydra").is_dir():
            found.append(p)
        elif p.is_dir():
            found += sorted(d for d in p.iterdir() if (d / ".hydra").is_dir())
    return found


def main(argv: Sequence[str]) -> int:
    from cifarlab.sweeps.rows import job_row

    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    jobs = job_dirs_of(argv)
    if not jobs:
        print(
            f"error: no run found in {' '.join(argv)}: give run folders (with metrics.json) or "
            "sweep folders (logs/train/multiruns/<time>).",
            file=sys.stderr,
        )
        return 2
    lines = group_by_setting([job_row(d) for d in jobs])
    print(f"{len(jobs)} runs, {len(lines)} settings, best mean val/acc_best first\n")
    print(markdown(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
