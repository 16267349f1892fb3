"""Host memory of the training split, with and without augmentation, in fresh processes.

    uv run python benchmarks/bench_memory.py --root DATA/cifar10-jpg [--baseline-src OLD/src]

Each configuration runs in its own process: it builds the data module on the real data (loaded
from the cache, which a first process builds if needed), notes its resident memory and its peak so
far, resets the kernel's peak counter (``/proc/self/clear_refs``), iterates one epoch of training
batches (batch 128) and reads the peak again (``VmHWM``). That epoch peak minus the resident memory
before it is what the training batches (for augmentation: the padded split, the epoch's draws)
add; the process's peak is the larger of the two peaks. ``--baseline-src`` runs the same
measurements against another checkout's ``src`` (e.g. ``git archive main``), for a before/after
table. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BATCH_SIZE = 128
MB = 1e6


def rss_bytes() -> int:
    """Resident memory now (Linux), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    """Peak resident memory since start or since ``reset_peak`` (Linux's VmHWM)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(root: str, options: dict) -> dict:
    """One measurement, in this (fresh) process."""
    from cifarlab.data import CIFAR10DataModule

    dm = CIFAR10DataModule(source="folder", root=root, batch_size=BATCH_SIZE, **options)
    dm.prepare_data()
    dm.setup()
    before, peak_setup = rss_bytes(), peak_bytes()
    reset_peak()
    start = time.perf_counter()
    batches = 0
    for _ in dm.train_dataloader():
        batches += 1
    seconds = time.perf_counter() - start
    return {
        "rss_before": before,
        "peak_setup": peak_setup,
        "peak_epoch": peak_bytes(),
        "batches": batches,
        "batches_per_s": batches / seconds,
    }


def measure(src: Path, root: str, options: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from bench_memory import child; "
        f"print('RESULT', json.dumps(child({root!r}, {options!r})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"measurement {options} with {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder with train/<class>/, test/<class>/")
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/ to compare")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1] / "src"

    runs = []
    if args.baseline_src:
        runs += [
            ("before", args.baseline_src, "augment=false", {"augment": False}),
            ("before", args.baseline_src, "augment=true", {"augment": True}),
        ]
    runs += [
        ("after", here, "augment=false", {"augment": False}),
        ("after", here, "augment=true", {"augment": True}),
        ("after", here, "augment=true gather=batch", {"augment": True, "gather": "batch"}),
        ("after", here, "augment=true pad_mode=reflect", {"augment": True, "pad_mode": "reflect"}),
    ]
    measure(here, args.root, {"augment": False})  # builds the cache once, unmeasured
    rows = [
        "| code | data options | RSS after setup (MB) | peak during setup (MB) "
        "| peak during the epoch (MB) | added by the epoch (MB) | process peak (MB) | batches/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    peaks: dict[tuple[str, str], float] = {}
    for label, src, name, options in runs:
        m = measure(src, args.root, options)
        added = (m["peak_epoch"] - m["rss_before"]) / MB
        peaks[label, name] = max(m["peak_setup"], m["peak_epoch"]) / MB
        rows.append(
            f"| {label} | {name} | {m['rss_before'] / MB:.0f} | {m['peak_setup'] / MB:.0f} "
            f"| {m['peak_epoch'] / MB:.0f} | {added:.0f} | {peaks[label, name]:.0f} "
            f"| {m['batches_per_s']:.0f} |"
        )
        print(rows[-1], flush=True)
    print()
    print("\n".join(rows))
    print()
    for label in ("before", "after"):
        if (label, "augment=true") in peaks:
            added = peaks[label, "augment=true"] - peaks[label, "augment=false"]
            print(f"{label}: augmentation adds {added:.0f} MB to the process's peak memory")


if __name__ == "__main__":
    main()
