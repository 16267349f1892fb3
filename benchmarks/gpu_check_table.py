"""The markdown table that gpu_check.py prints and writes: measure, result, target, verdict;
the parts that were skipped or failed say so in rows of their own."""

from __future__ import annotations

import argparse
import statistics
from typing import Any


def steady(times: list[float]) -> float:
    """Median epoch time without the first epoch (warm-up: cuDNN autotuning, compilation)."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def mb(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f} MB"


Row = tuple[str, str, str, str]


def row(measure: str, result: str, target: str = "", met: bool | None = None) -> Row:
    return (measure, result, target, "" if met is None else ("yes" if met else "NO"))


def overhead_rows(key: str, run: dict[str, Any], cuda: bool) -> list[Row]:
    """One model's run against the raw loop: time ratio, host syncs, memory, accuracy."""
    ours, raw = steady(run["epoch_s"]), steady(run["raw_epoch_s"])
    ratio = ours / raw
    rows = [
        row(
            f"{key}: s per training epoch, cifarlab / raw loop",
            f"{ours:.3f} / {raw:.3f} = {ratio:.2f}",
            "<= 1.15",
            ratio <= 1.15,
        )
    ]
    if cuda:
        per_step = run["syncs"] / max(1, run["steps"])
        sites = ", ".join(f"{s} x{n}" for s, n in run["sync_sites"].items()) or "none"
        rows += [
            row(
                f"{key}: host syncs per training step ({run['steps']} steps; {sites})",
                f"{per_step:.3f}",
                "0 (+ the divergence check)",
            ),
            row(
                f"{key}: data on the device / peak in training",
                f"{mb(run.get('data_mb'))} / {mb(run.get('peak_mb'))}",
            ),
        ]
    return [*rows, row(f"{key}: test accuracy", f"{100 * run['metrics']['test/acc']:.1f}%")]


def option_rows(results: dict[str, Any]) -> list[Row]:
    """The fast options (bf16 + channels_last + compile) and the 1-device ddp run."""
    rows = []
    fast = results.get("fast")
    if fast and results.get("overhead"):
        fp32 = steady(results["overhead"]["bn_cnn64"]["epoch_s"])
        fast_s = steady(fast["epoch_s"])
        rows.append(
            row(
                "bn_cnn64 bf16-mixed + channels_last + compile vs fp32, s per epoch (first epoch, "
                f"with compilation: {fast['epoch_s'][0]:.1f} s)",
                f"{fast_s:.3f} vs {fp32:.3f} ({fp32 / fast_s:.2f}x), test acc "
                f"{100 * fast['metrics']['test/acc']:.1f}%",
            )
        )
    ddp = results.get("ddp")
    if ddp:
        ok = ddp["returncode"] == 0 and ddp["metrics"].get("status") == "completed"
        epoch = f", {steady(ddp['epoch_s']):.3f} s per epoch" if ddp["epoch_s"] else ""
        rows.append(
            row(
                "train.py trainer=ddp on 1 device (bn_cnn32): exit, status",
                f"{ddp['returncode']}, {ddp['metrics'].get('status')}{epoch}, "
                f"{ddp['wall_s']:.0f} s in all",
                "completes",
                ok,
            )
        )
    return rows


def fastnet_rows(fastnet: dict[str, Any]) -> list[Row]:
    """The timed fastnet: airbench's figure over the timed runs, accuracy, compilation."""
    runs = fastnet["runs"]
    if not runs:
        return []
    warm, timed = runs[0], runs[1:]
    rows = [
        row(
            f"fastnet, epochs={fastnet['epochs']} ({' '.join(fastnet['overrides'])}): warm-up "
            "run, s train + test with TTA; graphs compiled",
            f"{warm['airbench_s']:.2f}; {warm['graphs']}",
        )
    ]
    if not timed:
        return [*rows, row("fastnet: timed runs", "none: the budget left held no run")]
    seconds = [run["airbench_s"] for run in timed]
    recompiled = [i for i, run in enumerate(timed, 1) if run["graphs"]]
    rows += [
        row(
            f"fastnet: airbench's time (train + test with TTA), s, mean [min, max] of "
            f"{len(timed)} timed runs",
            f"{statistics.mean(seconds):.2f} [{min(seconds):.2f}, {max(seconds):.2f}]",
        ),
        row(
            "fastnet: test accuracy with TTA (without), mean",
            f"{statistics.mean(r['acc'] for r in timed):.2f}% "
            f"({statistics.mean(r['acc_no_tta'] for r in timed):.2f}%)",
        ),
        row(
            "fastnet: timed runs that compiled a graph (their time includes it)",
            ", ".join(map(str, recompiled)) or "none",
            "none",
            not recompiled,
        ),
    ]
    return rows


def part_rows(parts: dict[str, dict[str, Any]]) -> list[Row]:
    """A row for each part that did not run to its end: skipped (and why), or its error."""
    rows = []
    for name, outcome in parts.items():
        if outcome["status"] == "skipped":
            rows.append(row(name, f"skipped: {outcome['reason']}"))
        elif outcome["status"] == "error":
            rows.append(
                row(name, f"error after {outcome['seconds']} s: {outcome['error']}", "", False)
            )
    return rows


def one_line(cell: str) -> str:
    """A cell as markdown keeps it in its row: no line breaks, no column bars."""
    return " ".join(cell.split()).replace("|", "/")


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    rows: list[Row] = []
    tests = results.get("gpu_tests")
    if tests:
        rows.append(row("GPU tests", tests["summary"], "all pass", tests["returncode"] == 0))
    if results.get("fastnet"):
        rows += fastnet_rows(results["fastnet"])
    runs = (results.get("overhead") or {}).items()
    for key, run in runs:
        rows += overhead_rows(key, run, cuda=args.device == "cuda")
    for key, run in runs:
        if run.get("test_s") is not None:
            images = f"{run.get('test_images', 0):,}"
            rows.append(
                row(
                    f"{key}: test epoch over the test split ({images} images), s",
                    f"{run['test_s']:.2f}",
                )
            )
    rows += option_rows(results)
    rows += part_rows(results.get("parts", {}))
    lines = ["| measure | result | target | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(one_line(cell) for cell in cells)} |" for cells in rows]
    return "\n".join(lines) + "\n"
