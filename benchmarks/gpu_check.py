"""One prepared GPU check: the GPU tests, the timed fastnet, cifarlab against a raw PyTorch loop.

docs/benchmarks.md ("GPU: the one prepared check") gives the device call; on the GPU machine,
from the project root, after benchmarks/gpu_prepare.py's prefix:

    python3 benchmarks/gpu_check.py --root /tmp/data/cifar10-jpg --out $OUT

Here, on the CPU and a small slice of the data (every part runs, the figures mean little):

    uv run python benchmarks/gpu_check.py --device cpu --smoke --root DATA --out /tmp/gpu_check

It prints one line of prerequisites (torch, triton, CUDA, the C/C++ compiler and Python.h that
torch.compile needs: benchmarks/gpu_prerequisites.py), then runs these parts in order, each
guarded (an error is recorded in the table and the next part runs), rewriting the markdown table
``<out>/gpu_check.md`` and the raw figures ``<out>/gpu_check.json`` after each, so a run cut off
by its time limit keeps what it measured:

1. the GPU tests: ``pytest -m gpu``, or tests/gpu_steps.py's check called directly where pytest
   is missing (``--without-pytest`` does so anyway);
2. ``experiment=fastnet`` timed as airbench94_muon times itself (benchmarks/time_fastnet.py:
   bf16-mixed, compiled, 8 epochs, a warm-up run then ``--fastnet-runs`` timed ones);
3. training time per epoch of LeNet and BN-CNN (width 32 and 64) through ``cifarlab.run.jobs.train``
   against a raw PyTorch loop over the same device tensors, same model class, batch, optimizer
   and schedule (target: ratio <= 1.15); in the same runs, host synchronizations per training step
   (target 0 but the divergence check), the device memory of the training data and the peak of
   training, and the time of the test epoch;
4. BN-CNN width 64 with bf16-mixed + channels_last + torch.compile against fp32;
5. a 1-GPU ``trainer=ddp`` run through train.py.

The compiled parts (2 and 4 on a GPU, 4 on the CPU) are skipped, with the reason, where the
prerequisites lack a compiler or Python.h. A part that would start after the time budget
(``--budget``, default 420 s, under the 600 s of the documented device call) is skipped; the timed
fastnet starts no run that the budget left cannot hold.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks"), str(REPO)]

from gpu_check_table import table  # noqa: E402
from gpu_prerequisites import Prerequisites, prerequisites  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from raw_loop import raw_epochs  # noqa: E402
from time_fastnet import EPOCHS, SMOKE, time_runs, timed_config  # noqa: E402

from cifarlab.data import CIFAR10DataModule  # noqa: E402
from cifarlab.models import build_model  # noqa: E402
from cifarlab.run.jobs import train  # noqa: E402

MODELS = (("lenet", 6), ("bn_cnn", 32), ("bn_cnn", 64))
BUDGET_S = 420.0  # the documented call runs under timeout_s=600: setup and the last part fit


class Budget:
    """Wall-clock budget of the whole check; parts that would start after it are skipped."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


@dataclass
class Part:
    """One part of the check: ``run(report)`` returns its results (JSON-able); ``compiles``:
    it needs torch.compile, so the prerequisites' compiler and Python.h."""

    key: str
    name: str
    run: Callable[[Report], Any]
    compiles: bool = False


class Report:
    """The check's results, rewritten to ``<out>/gpu_check.md`` and ``.json`` on every change."""

    def __init__(self, out: Path, header: list[str], args: argparse.Namespace) -> None:
        self.out, self.header, self.args = out, header, args
        self.results: dict[str, Any] = {"header": header, "parts": {}}

    def set(self, key: str, value: Any) -> None:
        self.results[key] = value
        self.save()

    def outcome(self, part: Part, **outcome: Any) -> None:
        self.results["parts"][part.name] = outcome
        self.save()

    def text(self) -> str:
        return "\n\n".join(self.header) + "\n\n" + table(self.results, self.args)

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.md").write_text(self.text())
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1, default=str))


def run_parts(
    parts: list[Part], report: Report, budget: Budget, prereq: Prerequisites, device: str
) -> None:
    """Runs each part guarded, in order; the report is rewritten after each."""
    compile_missing = prereq.compile_missing(device)
    for part in parts:
        if budget.left() <= 0:
            reason = f"time budget of {budget.seconds:.0f} s spent"
            print(f"[check] {part.name}: skipped, {reason}", flush=True)
            report.outcome(part, status="skipped", reason=reason)
            continue
        if part.compiles and compile_missing:
            print(f"[check] {part.name}: skipped, {compile_missing}", flush=True)
            report.outcome(part, status="skipped", reason=compile_missing)
            continue
        began = time.perf_counter()
        try:
            report.set(part.key, part.run(report))
        except Exception as err:  # recorded; the next part still runs
            seconds = time.perf_counter() - began
            print(f"[check] {part.name}: error after {seconds:.1f} s", flush=True)
            traceback.print_exc()
            report.outcome(
                part,
                status="error",
                error=f"{type(err).__name__}: {err}",
                traceback=traceback.format_exc()[-3000:],
                seconds=round(seconds, 1),
            )
            continue
        seconds = time.perf_counter() - began
        print(f"[check] {part.name}: {seconds:.1f} s, {budget.left():.0f} s left", flush=True)
        report.outcome(part, status="done", seconds=round(seconds, 1))


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
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    return {**json.loads(probe.read_text()), "metrics": scalars, "cfg": cfg}


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


def overhead(args: argparse.Namespace, report: Report) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for model, width in MODELS:
        key = f"{model}{width}"
        run = cifarlab_run(args, key, f"model={model}", f"model.width={width}")
        raw = raw_run(args, model, width, run.pop("cfg"))
        results[key] = {**run, "raw_epoch_s": raw}
        report.set("overhead", results)  # what is measured so far survives a cut-off
    return results


def fast_options(args: argparse.Namespace, report: Report) -> dict[str, Any]:
    run = cifarlab_run(
        args,
        "bn_cnn64_fast",
        "model=bn_cnn",
        "model.width=64",
        "trainer.precision=bf16-mixed",
        "data.channels_last=true",
        "model.compile=true",
    )
    run.pop("cfg")
    return run


def timed_fastnet(args: argparse.Namespace, budget: Budget, report: Report) -> dict[str, Any]:
    """benchmarks/time_fastnet.py's warm-up and timed runs, in this process."""
    if args.device == "cuda":
        overrides = ["trainer=gpu", "trainer.precision=bf16-mixed", "model.compile=true"]
    else:
        overrides = ["trainer=cpu"]
    if args.smoke:
        overrides += SMOKE
    epochs = 1 if args.smoke else EPOCHS
    cfg = timed_config(args.root, args.work / "fastnet", epochs, overrides)
    result: dict[str, Any] = {"epochs": epochs, "overrides": overrides, "runs": []}

    def after_each(runs: list[dict[str, Any]]) -> None:
        report.set("fastnet", {**result, "runs": runs})

    result["runs"] = time_runs(cfg, args.fastnet_runs, after_each=after_each, time_left=budget.left)
    return result


def ddp_one_gpu(args: argparse.Namespace, report: Report) -> dict[str, Any]:
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
        "metrics": {k: v for k, v in metrics.items() if not isinstance(v, dict)},
        "stderr_tail": proc.stderr[-1500:] if proc.returncode else "",
    }


def tiny_copy(
    root: Path, dest: Path, classes: int = 3, n_train: int = 40, n_test: int = 12
) -> Path:
    """The first images of the first classes of the folder-source data at ``root``: the size of
    the tests' own data (tests/conftest.py's ``make_folder``)."""
    for split, count in (("train", n_train), ("test", n_test)):
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir())[:classes]:
            target = dest / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for image in sorted(folder.iterdir())[:count]:
                shutil.copy(image, target / image.name)
    return dest


def gpu_tests_directly(args: argparse.Namespace) -> dict[str, Any]:
    """tests/gpu_steps.py's check for each case, without pytest, on a slice of ``--root``."""
    from tests.gpu_steps import CASES, check_no_host_sync

    if not torch.cuda.is_available():
        return {
            "returncode": 0,
            "summary": f"{len(CASES)} skipped (needs a CUDA GPU), run without pytest",
            "cases": {case: "skipped" for case in CASES},
        }
    data = tiny_copy(args.root, args.work / "gpu_tests_data")
    outcomes = {}
    for case, options in CASES.items():
        try:
            check_no_host_sync(data, args.work / "gpu_tests" / case, options)
            outcomes[case] = "passed"
        except Exception as err:  # one case's failure is that case's result
            outcomes[case] = f"failed: {type(err).__name__}: {err}"[:1500]
    failed = sum(outcome != "passed" for outcome in outcomes.values())
    return {
        "returncode": int(failed > 0),
        "summary": f"{len(CASES) - failed} passed, {failed} failed, run without pytest",
        "cases": outcomes,
    }


def gpu_tests(args: argparse.Namespace, report: Report) -> dict[str, Any]:
    if args.without_pytest or importlib.util.find_spec("pytest") is None:
        return gpu_tests_directly(args)
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


def parts_of_the_check(args: argparse.Namespace, budget: Budget) -> list[Part]:
    cuda = args.device == "cuda"
    parts = [
        Part("gpu_tests", "GPU tests", lambda r: gpu_tests(args, r)),
        Part("fastnet", "timed fastnet", lambda r: timed_fastnet(args, budget, r), compiles=cuda),
        Part("overhead", "cifarlab vs raw loop", lambda r: overhead(args, r)),
        Part("fast", "bf16 + channels_last + compile", lambda r: fast_options(args, r), True),
        Part("ddp", "trainer=ddp on 1 device", lambda r: ddp_one_gpu(args, r)),
    ]
    return [part for part in parts if part.key not in args.skip]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder-source CIFAR-10")
    parser.add_argument("--out", type=Path, required=True, help="folder for the table and JSON")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="20 batches per epoch, 2 epochs")
    parser.add_argument("--epochs", type=int, default=3, help="per run of part 3 (and 4, 5)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--fastnet-runs", type=int, default=3, help="timed runs of part 2")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds (default 420)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("gpu_tests", "fastnet", "overhead", "fast", "ddp"),
        help="parts to leave out",
    )
    parser.add_argument(
        "--without-pytest", action="store_true", help="call the GPU tests' check directly"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here; use --device cpu --smoke to try the parts on the CPU")
    if args.smoke:
        args.epochs = 2
    args.root = args.root.resolve()
    budget = Budget(args.budget)
    prereq = prerequisites()
    print(prereq.line(), flush=True)
    header = [
        prereq.line(),
        f"{prereq.device if args.device == 'cuda' else 'CPU'}: {args.epochs} epochs per run of "
        f"parts 3-5 (the first is warm-up and left out), batch {args.batch_size}"
        f"{', smoke run' if args.smoke else ''}, budget {args.budget:.0f} s",
    ]
    print(header[1], flush=True)
    report = Report(args.out, header, args)
    report.save()
    with tempfile.TemporaryDirectory() as work:
        args.work = Path(work)
        run_parts(parts_of_the_check(args, budget), report, budget, prereq, args.device)
    print("\n" + report.text())
    print(f"total {time.perf_counter() - budget.start:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
