"""One prepared GPU check: the GPU tests, then cifarlab against a raw PyTorch loop, on real data.

On a GPU machine without network (see ../shared/gpu/README.md), from the project root:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/*.whl
    export PYTHONPATH=$PWD/src:$PWD/benchmarks:/tmp/site
    python3 -m zipfile -e .device/cifar10-jpg.zip /tmp/data/
    python3 benchmarks/gpu_check.py --root /tmp/data/cifar10-jpg --out $OUT

Here, on the CPU and a small slice of the data (every part runs, the figures mean little):

    uv run python benchmarks/gpu_check.py --device cpu --smoke --root DATA --out /tmp/gpu_check

It runs ``pytest -m gpu``, then measures side by side and prints one markdown table (also written
to ``<out>/gpu_check.md``, raw figures in ``<out>/gpu_check.json``):

1. training time per epoch of LeNet and BN-CNN (width 32 and 64) through ``cifarlab.run.train``
   (Hydra config, Lightning, callbacks, logger) against a raw PyTorch loop over the same device
   tensors, same model class, batch, optimizer and schedule (target: ratio <= 1.15);
2. host synchronizations per training step in cifarlab (target 0; the divergence check reads the
   device every ``divergence_check_every_n_steps`` steps and at each epoch's last step);
3. device memory of the training data and peak memory of training;
4. the time of the test epoch (10,000 images), in the same runs;
5. BN-CNN width 64 with bf16-mixed + channels_last + torch.compile against fp32;
6. a 1-GPU ``trainer=ddp`` run through train.py.

Each part is skipped once the time budget (``--budget-s``, default 390 s of the 8 minutes a
device run may take) is spent; the table says which.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

from gpu_check_table import table  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from raw_loop import raw_epochs  # noqa: E402

from cifarlab.data import CIFAR10DataModule  # noqa: E402
from cifarlab.models import build_model  # noqa: E402
from cifarlab.run import train  # noqa: E402

MODELS = (("lenet", 6), ("bn_cnn", 32), ("bn_cnn", 64))


class Budget:
    """Wall-clock budget of the whole check; parts that would start after it are skipped."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def run(self, name: str, part: Any, *args: Any) -> Any:
        if self.left() <= 0:
            print(f"[budget] {name}: skipped, budget of {self.seconds:.0f} s spent", flush=True)
            return None
        began = time.perf_counter()
        result = part(*args)
        print(
            f"[budget] {name}: {time.perf_counter() - began:.1f} s, {self.left():.0f} s left",
            flush=True,
        )
        return result


def base_overrides(args: argparse.Namespace, out: Path, *extra: str) -> list[str]:
    trainer = "trainer=gpu" if args.device == "cuda" else "trainer=cpu"
    overrides = [
        trainer,
        "data.source=folder",
        f"data.root={args.root}",
        f"data.batch_size={args.batch_size}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        f"paths.output_dir={out}",
        *(["trainer.limit_train_batches=20", "data.val_size=200"] if args.smoke else []),
        *extra,
    ]
    return overrides


def cifarlab_run(args: argparse.Namespace, name: str, *extra: str) -> dict[str, Any]:
    """One train() run with DeviceProbe; returns the probe's record and the run's metrics."""
    out = args.work / name
    probe = out / "probe.json"
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *base_overrides(args, out, *extra),
                "+callbacks.probe._target_=timing_callbacks.DeviceProbe",
                f"+callbacks.probe.path={probe}",
            ],
        )
    metrics = train(cfg)
    return {**json.loads(probe.read_text()), "metrics": metrics, "cfg": cfg}


def raw_run(args: argparse.Namespace, model: str, width: int, cfg: Any) -> list[float]:
    """raw_loop's plain loop over the same device tensors, model class, optimizer and schedule."""
    device = torch.device(args.device)
    dm = CIFAR10DataModule(source="folder", root=str(args.root), val_size=cfg.data.val_size)
    dm.setup()
    train_split = dm.splits["train"]
    return raw_epochs(
        build_model(model, len(dm.class_names), width).to(device),
        train_split.images.to(device),
        train_split.labels.to(device),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=cfg.optimizer.lr,
        weight_decay=cfg.optimizer.weight_decay,
        pct_start=cfg.scheduler.pct_start,
        max_batches=20 if args.smoke else None,
    )


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for model, width in MODELS:
        key = f"{model}{width}"
        run = cifarlab_run(args, key, f"model={model}", f"model.width={width}")
        raw = raw_run(args, model, width, run.pop("cfg"))
        results[key] = {**run, "raw_epoch_s": raw}
    return results


def fast_options(args: argparse.Namespace) -> dict[str, Any]:
    return cifarlab_run(
        args,
        "bn_cnn64_fast",
        "model=bn_cnn",
        "model.width=64",
        "trainer.precision=bf16-mixed",
        "data.channels_last=true",
        "model.compile=true",
    )


def ddp_one_gpu(args: argparse.Namespace) -> dict[str, Any]:
    """train.py trainer=ddp in a fresh process (Lightning's script-launched DDP on 1 device)."""
    out = args.work / "ddp"
    times = out / "epoch_times.json"
    preset = "trainer=ddp" if args.device == "cuda" else "trainer=ddp_cpu"
    overrides = [
        o.replace("paths.output_dir=", "hydra.run.dir=")
        for o in base_overrides(args, out)
        if not o.startswith("trainer=")
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            preset,
            "trainer.devices=1",
            "trainer.strategy=ddp",
            "model=bn_cnn",
            "model.width=32",
            *overrides,
            "+callbacks.epoch_timer._target_=timing_callbacks.EpochTimer",
            f"+callbacks.epoch_timer.path={times}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    metrics = json.loads((out / "metrics.json").read_text()) if proc.returncode == 0 else {}
    return {
        "returncode": proc.returncode,
        "wall_s": time.perf_counter() - start,
        "epoch_s": json.loads(times.read_text()) if times.exists() else [],
        "metrics": metrics,
        "stderr_tail": proc.stderr[-1500:] if proc.returncode else "",
    }


def gpu_tests(args: argparse.Namespace) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {
        "returncode": proc.returncode,
        "summary": lines[-1] if lines else "",
        "tail": lines[-30:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder-source CIFAR-10")
    parser.add_argument("--out", type=Path, required=True, help="folder for the table and JSON")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="20 batches per epoch, 2 epochs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--budget-s", type=float, default=390.0)
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here; use --device cpu --smoke to try the parts on the CPU")
    if args.smoke:
        args.epochs = 2
    args.out.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget_s)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    header = (
        f"{device}, torch {torch.__version__}, {args.epochs} epochs per run (the first is "
        f"warm-up and left out), batch {args.batch_size}{', smoke run' if args.smoke else ''}, "
        f"budget {args.budget_s:.0f} s"
    )
    print(header, flush=True)
    results: dict[str, Any] = {"skipped": []}
    with tempfile.TemporaryDirectory() as work:
        args.work = Path(work)
        parts = [
            ("gpu_tests", "pytest -m gpu", gpu_tests),
            ("overhead", "cifarlab vs raw loop", overhead),
            ("fast", "bf16 + channels_last + compile", fast_options),
            ("ddp", "trainer=ddp on 1 device", ddp_one_gpu),
        ]
        if args.skip_tests:
            parts = parts[1:]
        for key, name, part in parts:
            results[key] = budget.run(name, part, args)
            if results[key] is None:
                results["skipped"].append(name)
    text = f"{header}\n\n{table(results, args)}"
    print("\n" + text)
    (args.out / "gpu_check.md").write_text(text)
    for run in (results.get("overhead") or {}).values():
        run["metrics"] = {k: v for k, v in run["metrics"].items() if not isinstance(v, dict)}
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"total {time.perf_counter() - budget.start:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
