"""The quick start end to end: ``train.py model=lenet trainer.max_epochs=2`` against the same work
in a plain PyTorch script (benchmarks/plain_quickstart.py), each in a fresh process, in turns.

    python benchmarks/bench_quickstart.py --root /path/to/cifar10-jpg [--repeats 3]

``--root`` is a folder-source CIFAR-10 (train/<class>/*.jpg, test/<class>/*.jpg). Its decoded cache
is built first if it is not there (both sides read it). Each repeat runs both (the order swapping
every repeat) and times them from process start to exit; the table gives the median and range of
each and of cifarlab's time over the script's (per repeat). Then one more cifarlab run, in a
process that times its phases (``--phases``), says where its time goes, and ``-X importtime``
splits the imports by package, next to the script's (torch and the network).

Phases are wall-clock seconds of each part, not counting the parts inside it that have their own
row (a figure drawn during validation counts to the figures): the imports, Hydra (composition, run
folder, logging, train.py's checks), building the run (seeding, the modules, the trainer and its
callbacks and logger), the data (cache load, splits), the model summary, the training steps,
validation, the test loop, the figures (drawing them, PNG files and TensorBoard images),
checkpoints, the report (per-class table, metrics.json), Lightning's own work around them (setup,
epoch ends, logging, the test's checkpoint load) and the interpreter's start and exit.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUICK_START = ["model=lenet", "trainer.max_epochs=2"]
FIGURES = "figures (drawing, PNG files, TensorBoard images)"


class PhaseTimer:
    """Seconds per phase, each excluding the phases timed inside it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: list[list[Any]] = []  # [phase, start, seconds of the phases inside]

    def enter(self, phase: str) -> None:
        self._open.append([phase, time.perf_counter(), 0.0])

    def exit(self) -> None:
        phase, start, inner = self._open.pop()
        elapsed = time.perf_counter() - start
        self.seconds[phase] += elapsed - inner
        if self._open:
            self._open[-1][2] += elapsed

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        """Times every call of ``owner.name`` (a module's function or a class's method)."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.enter(phase)
            try:
                return original(*args, **kwargs)
            finally:
                self.exit()

        setattr(owner, name, timed)


TIMER = PhaseTimer()


def phase_clock() -> Any:
    """A callback that times the training steps, validation and the test loop with ``TIMER``
    (made here: Lightning is imported only once the imports are being timed)."""
    import lightning as L

    class PhaseClock(L.Callback):
        def __init__(self) -> None:
            self.training = False  # in an epoch's training steps

        def on_train_epoch_start(self, *args: Any) -> None:
            TIMER.enter("training steps")
            self.training = True

        def _end_training(self) -> None:
            if self.training:
                TIMER.exit()
                self.training = False

        def on_validation_start(self, *args: Any) -> None:
            self._end_training()  # an epoch's training steps end where its validation starts
            TIMER.enter("validation")

        def on_validation_end(self, *args: Any) -> None:
            TIMER.exit()

        def on_train_epoch_end(self, *args: Any) -> None:
            self._end_training()

        def on_test_start(self, *args: Any) -> None:
            TIMER.enter("test loop")

        def on_test_end(self, *args: Any) -> None:
            TIMER.exit()

    return PhaseClock()


def time_phases(out: Path, train_args: list[str]) -> None:
    """Runs train.py in this process with its phases timed; writes them to ``out`` as JSON."""
    start = time.perf_counter()
    TIMER.enter("imports (hydra, cifarlab, Lightning, torch, torchmetrics, ...)")
    import hydra  # noqa: F401  (train.py's own imports, then what cifarlab.run.jobs brings)
    import lightning as L
    from torch.utils.tensorboard.writer import SummaryWriter

    import cifarlab.config  # noqa: F401
    from cifarlab.callbacks import class_figures, console, curves, image_grids
    from cifarlab.data import datamodule
    from cifarlab.review import report
    from cifarlab.run import jobs

    TIMER.exit()
    for owner, name in [
        (class_figures, "confusion_figure"),
        (class_figures, "per_class_figure"),
        (image_grids, "image_grid_figure"),
        (curves, "curves_figure"),
        (curves, "save_png"),
        (report, "save_png"),
        (report, "per_class_figure"),
        (SummaryWriter, "add_figure"),
    ]:
        TIMER.wrap(owner, name, FIGURES)
    TIMER.wrap(jobs, "train", "building the run (seeding, modules, trainer, callbacks, logger)")
    for method in ("__init__", "prepare_data", "setup"):
        TIMER.wrap(datamodule.CIFAR10DataModule, method, "data (cache load, splits)")
    TIMER.wrap(console.NetSummary, "on_fit_start", "model summary (layers, FLOPs)")
    TIMER.wrap(L.Trainer, "fit", "Lightning around them (setup, epoch ends, logging)")
    TIMER.wrap(L.Trainer, "test", "Lightning around them (setup, epoch ends, logging)")
    TIMER.wrap(L.Trainer, "save_checkpoint", "checkpoints")
    TIMER.wrap(jobs, "report_results", "report (per-class table, metrics.json)")
    sys.argv = [str(REPO / "train.py"), *train_args]
    TIMER.enter("Hydra (composition, run folder, logging) and train.py's checks")
    try:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    finally:
        TIMER.exit()
    out.write_text(json.dumps({**TIMER.seconds, "total": time.perf_counter() - start}))


def timed_run(command: list[str], env: dict[str, str]) -> float:
    """Seconds from starting ``command`` in a fresh process to its exit."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def import_seconds(statement: str, env: dict[str, str]) -> dict[str, float]:
    """``python -X importtime -c statement``: seconds of its imports by top-level package."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if found:
            seconds[found.group(2).split(".")[0]] += int(found.group(1)) / 1e6
    return seconds


def spread(values: list[float], digits: int = 1) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"[{min(values):.{digits}f}, {max(values):.{digits}f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phases", type=Path, help=argparse.SUPPRESS)  # the timing process
    args, train_args = parser.parse_known_args()
    if args.phases:
        time_phases(args.phases, train_args)
        return
    from cifarlab.data import cache_path, load_split

    caches = []
    for split in ("train", "test"):
        load_split("folder", args.root, split)  # builds the cache if it is not there yet
        caches.append(str(cache_path("folder", args.root, split)))
    here = str(Path(__file__).parent)
    paths = [here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    data = ["data.source=folder", f"data.root={args.root}"]
    times: dict[str, list[float]] = {"plain": [], "cifarlab": []}
    with tempfile.TemporaryDirectory() as tmp:
        sides: list[tuple[str, Callable[[int], list[str]]]] = [
            ("plain", lambda _: [sys.executable, "benchmarks/plain_quickstart.py", *caches]),
            (
                "cifarlab",
                lambda n: [
                    sys.executable,
                    "train.py",
                    *QUICK_START,
                    *data,
                    f"hydra.run.dir={tmp}/run{n}",
                ],
            ),
        ]
        for repeat in range(args.repeats):
            for name, command in sides if repeat % 2 == 0 else sides[::-1]:
                times[name].append(timed_run(command(repeat), env))
            print(
                f"repeat {repeat + 1}: cifarlab {times['cifarlab'][-1]:.1f} s, "
                f"plain {times['plain'][-1]:.1f} s",
                file=sys.stderr,
            )
        phases_file = Path(tmp) / "phases.json"
        command = [
            sys.executable,
            __file__,
            "--root",
            str(args.root),
            "--phases",
            str(phases_file),
            *QUICK_START,
            *data,
            f"hydra.run.dir={tmp}/phases",
            "+callbacks.phase_clock._target_=bench_quickstart.phase_clock",
        ]
        wall = timed_run(command, env)
        phases = json.loads(phases_file.read_text())
    ratios = [c / p for c, p in zip(times["cifarlab"], times["plain"], strict=True)]
    print(f"\nmedian [min, max] of {args.repeats} repeats, fresh processes, in turns\n")
    print("| run | seconds |\n| --- | --- |")
    print(f"| plain PyTorch script (benchmarks/plain_quickstart.py) | {spread(times['plain'])} |")
    print(f"| `train.py {' '.join(QUICK_START)}` | {spread(times['cifarlab'])} |")
    print(f"| cifarlab / plain (per repeat) | {spread(ratios, 2)} |")

    total = phases.pop("total")
    phases["interpreter start and exit"] = wall - total
    print(f"\nwhere cifarlab's time goes (one run, {wall:.1f} s)\n")
    print("| phase | seconds | share |\n| --- | --- | --- |")
    for phase, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"| {phase} | {seconds:.2f} | {seconds / wall:.0%} |")

    ours = import_seconds("import hydra, cifarlab.config, cifarlab.run.jobs", env)
    theirs = import_seconds("import torch, cifarlab.models.lenet", env)
    print("\nimports by package (`python -X importtime`, seconds)\n")
    print("| package | cifarlab's run | plain script |\n| --- | --- | --- |")
    for package, seconds in sorted(ours.items(), key=lambda kv: -kv[1])[:12]:
        print(f"| {package} | {seconds:.2f} | {theirs.get(package, 0.0):.2f} |")
    print(f"| all | {sum(ours.values()):.2f} | {sum(theirs.values()):.2f} |")


if __name__ == "__main__":
    if "--phases" in sys.argv:  # the timing process: the callback must find this module's TIMER
        sys.path.insert(0, str(Path(__file__).parent))
        import bench_quickstart

        bench_quickstart.main()
    else:
        main()
