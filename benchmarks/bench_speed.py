"""Measures cifarlab's speed targets side by side and prints one markdown table.

    uv run python benchmarks/bench_speed.py --root /path/to/cifar10-jpg [--repeats 3]

``--root`` is a folder-source CIFAR-10 (train/<class>/*.jpg, test/<class>/*.jpg). What it measures:

1. data preparation: decoding all 60,000 images into the cache (the cache is deleted first), then
   loading the cache, as a later run does;
2. the input pipeline: batches per second of the data module (augmentation on) against
   torchvision's per-image path (``CIFAR10`` + transforms + ``DataLoader``) at the same batch size;
3. Lightning's overhead: training time per epoch through ``cifarlab.run.jobs.train`` (Hydra config,
   Lightning Trainer, callbacks, logger) against the raw PyTorch loop below, same model class,
   batch size, data tensors, optimizer and schedule, alternating in one process;
4. end to end: ``train.py model=lenet trainer.max_epochs=2`` in a fresh process, from process start
   to its first training step (imports, config composition, data) and to the printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from raw_loop import raw_epochs
from torch.utils.data import DataLoader
from torchvision_baseline import torchvision_cifar10

from cifarlab.data import CIFAR10DataModule, cache_path, load_split
from cifarlab.models.lenet import LeNet
from cifarlab.run.jobs import train

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZE = 128


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} [{min(values):.3g}, {max(values):.3g}]"


def bench_data_prep(root: Path, repeats: int) -> dict[str, list[float]]:
    decode, load = [], []
    for _ in range(max(1, repeats - 1)):
        for split in ("train", "test"):
            cache_path("folder", root, split).unlink(missing_ok=True)
        start = time.perf_counter()
        for split in ("train", "test"):
            load_split("folder", root, split)
        decode.append(time.perf_counter() - start)
    for _ in range(repeats):
        start = time.perf_counter()
        for split in ("train", "test"):
            load_split("folder", root, split)
        load.append(time.perf_counter() - start)
    return {"decode": decode, "load": load}


def batches_per_second(loader, n_batches: int) -> float:
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(n_batches):
        next(iterator)
    return n_batches / (time.perf_counter() - start)


def bench_pipeline(root: Path, repeats: int) -> dict[str, list[float]]:
    dm = CIFAR10DataModule(source="folder", root=str(root), batch_size=BATCH_SIZE, augment=True)
    dm.setup()
    ours = [batches_per_second(dm.train_dataloader(), 300) for _ in range(repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        dataset = torchvision_cifar10(
            dm.splits["train"].images, dm.splits["train"].labels, Path(tmp)
        )
        loader = DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=2, persistent_workers=True
        )
        theirs = [batches_per_second(loader, 60) for _ in range(repeats)]
    return {"ours": ours, "torchvision": theirs}


def bench_overhead(root: Path, repeats: int, epochs: int = 3) -> dict[str, list[float]]:
    overrides = [
        "model=lenet",
        "data.source=folder",
        f"data.root={root}",
        f"trainer.max_epochs={epochs}",
        "trainer.accelerator=cpu",
    ]
    lightning_times, raw_times = [], []
    for _ in range(repeats):
        with (
            tempfile.TemporaryDirectory() as tmp,
            initialize_config_dir(str(REPO / "conf"), version_base="1.3"),
        ):
            times = Path(tmp) / "epoch_times.json"
            cfg = compose(
                "train",
                overrides=[
                    *overrides,
                    f"paths.output_dir={tmp}",
                    "+callbacks.epoch_timer._target_=timing_callbacks.EpochTimer",
                    f"+callbacks.epoch_timer.path={times}",
                ],
            )
            train(cfg)
            lightning_times += json.loads(times.read_text())[1:]
        dm = CIFAR10DataModule(source="folder", root=str(root))
        dm.setup()
        split = dm.splits["train"]
        raw_times += raw_epochs(
            LeNet(),
            split.images,
            split.labels,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            lr=cfg.optimizer.lr,
            weight_decay=cfg.optimizer.weight_decay,
            pct_start=cfg.scheduler.pct_start,
        )[1:]
    return {"lightning": lightning_times, "raw": raw_times}


def bench_end_to_end(root: Path, repeats: int) -> dict[str, list[float]]:
    composed, startup, total, accuracy = [], [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            stamp = Path(tmp) / "first_step"
            start = time.time()
            proc = subprocess.run(
                [
                    sys.executable,
                    str(REPO / "train.py"),
                    "model=lenet",
                    "trainer.max_epochs=2",
                    "data.source=folder",
                    f"data.root={root}",
                    f"hydra.run.dir={tmp}/run",
                    "+callbacks.first_step._target_=timing_callbacks.FirstStepStamp",
                    f"+callbacks.first_step.path={stamp}",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
            )
            total.append(time.time() - start)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            stamps = json.loads(stamp.read_text())
            composed.append(stamps["built"] - start)
            startup.append(stamps["first_step"] - start)
            accuracy.append(
                json.loads((Path(tmp) / "run" / "metrics.json").read_text())["test/acc"]
            )
    return {"composed": composed, "startup": startup, "total": total, "accuracy": accuracy}


Row = tuple[str, str, str, bool | None]


def data_rows(results: dict[str, Any]) -> list[Row]:
    """Data preparation and the input pipeline against torchvision's."""
    prep, pipe = results["data_prep"], results["pipeline"]
    ratio_pipe = statistics.median(pipe["ours"]) / statistics.median(pipe["torchvision"])
    return [
        (
            "decode 60,000 images into the cache (s)",
            spread(prep["decode"]),
            "<= 20",
            statistics.median(prep["decode"]) <= 20,
        ),
        (
            "load the cache, both splits (s)",
            spread(prep["load"]),
            "<= 1",
            statistics.median(prep["load"]) <= 1,
        ),
        ("data module, batches/s (batch 128, crop+flip)", spread(pipe["ours"]), "", None),
        (
            "torchvision CIFAR10+transforms DataLoader(num_workers=2), batches/s",
            spread(pipe["torchvision"]),
            "",
            None,
        ),
        ("input pipeline speed-up", f"{ratio_pipe:.1f}x", ">= 20x", ratio_pipe >= 20),
    ]


def training_rows(results: dict[str, Any]) -> list[Row]:
    """Lightning's overhead per epoch, and train.py end to end."""
    over, e2e = results["overhead"], results["end_to_end"]
    ratio_over = statistics.median(over["lightning"]) / statistics.median(over["raw"])
    return [
        (
            "raw PyTorch loop, s per epoch (LeNet, batch 128, AdamW one-cycle)",
            spread(over["raw"]),
            "",
            None,
        ),
        ("cifarlab (Lightning + Hydra), s per epoch", spread(over["lightning"]), "", None),
        ("Lightning overhead (ratio)", f"{ratio_over:.3f}", "<= 1.10", ratio_over <= 1.10),
        (
            "train.py: imports and config composition (process start to callbacks built) (s)",
            spread(e2e["composed"]),
            "<= 5",
            statistics.median(e2e["composed"]) <= 5,
        ),
        (
            "... and to the first training step (data, model, loggers too) (s)",
            spread(e2e["startup"]),
            "",
            None,
        ),
        (
            "train.py model=lenet trainer.max_epochs=2: start to table (s)",
            spread(e2e["total"]),
            "<= 30",
            statistics.median(e2e["total"]) <= 30,
        ),
        (
            "... its test accuracy (%)",
            spread([100 * a for a in e2e["accuracy"]]),
            ">= 55",
            min(e2e["accuracy"]) >= 0.55,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    torch.manual_seed(0)

    results = {
        "data_prep": bench_data_prep(args.root, args.repeats),
        "pipeline": bench_pipeline(args.root, args.repeats),
        "overhead": bench_overhead(args.root, args.repeats),
        "end_to_end": bench_end_to_end(args.root, args.repeats),
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(
        f"\ntorch {torch.__version__}, lightning {L.__version__}, "
        f"{torch.get_num_threads()} threads, median [min, max] of {args.repeats} repeats\n"
    )
    print("| measure | result | target | met |\n| --- | --- | --- | --- |")
    for name, value, target, met in [*data_rows(results), *training_rows(results)]:
        print(
            f"| {name} | {value} | {target} | {'' if met is None else ('yes' if met else 'NO')} |"
        )


if __name__ == "__main__":
    main()
