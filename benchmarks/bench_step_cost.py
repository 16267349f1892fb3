"""The framework's cost per training step: ``cifarlab.run.train`` with the default config against
the raw PyTorch loop, on a network whose compute is negligible, side by side in one process.

    python benchmarks/bench_step_cost.py --root /path/to/cifar10-jpg [--repeats 5] [--profile]

``--root`` is a folder-source CIFAR-10 (train/<class>/*.jpg, test/<class>/*.jpg; its decoded cache
is built on first use). Every side trains ``model=fc512 model.width=1`` (3072 -> 1 -> 10: next to
no arithmetic, so what is left is the loop's own cost) at batch 128 with AdamW and the linear
one-cycle schedule, ``STEPS`` steps an epoch, ``EPOCHS`` epochs, on the same decoded images; the
first epoch is not timed (warm-up). The sides:

- the raw loop (benchmarks/raw_loop.py), one epoch per call so that each epoch's CPU time is
  measured too (its schedule then spans that epoch: the same work per step);
- Lightning alone: the raw loop's step as a bare LightningModule (no metrics, no logging; the
  optimizer stepped in the step, as cifarlab's module does by default) in a
  Trainer with no logger, bar, checkpoint or summary, on cifarlab's data path: the cost of
  Lightning's loop itself;
- cifarlab's ``train()`` with every default feature: the Rich progress bar (drawn to stderr as on
  a terminal), per-class metrics, the divergence guard, both checkpoints, TensorBoard scalars and
  figures, the lr monitor, history.csv and curves.png.

An epoch's clock runs from its start to the end of its last training step (validation is not a
training step). The sides take turns (in a rotating order), so all see the same load; the table
gives the median and range over the repeats of microseconds per step, wall-clock and the process's
CPU time, and of the paired differences. On CPUs the process first gets the malloc setting that
cifarlab applies to CPU runs (cifarlab.host_memory), so that no side runs without it.

``--profile`` adds one more cifarlab run under cProfile, recorded over the timed epochs only, and
prints where the time of a step goes: by package (own time) and the functions with the most own
and cumulative time. cProfile slows Python-heavy code more than torch's C++ ops, so its figures
are for comparing parts of a step, not for the cost itself.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from raw_loop import raw_epochs

from cifarlab.data import CIFAR10DataModule, ImageSet
from cifarlab.host_memory import keep_freed_memory
from cifarlab.models.fc512 import FC512
from cifarlab.run import train

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZE = 128
STEPS = 300  # training steps per epoch (of the 351 full batches of 45,000 images)
EPOCHS = 3  # the first is not timed
TOP = 25  # functions listed per profile table


class StepClock(L.Callback):
    """Training seconds of every epoch after the first, wall-clock and the process's CPU time (all
    its threads: the bar's refresh thread too), written to ``path`` as JSON; with ``profile`` set,
    also a cProfile of those epochs, dumped to ``profile``.

    An epoch's clock starts at its ``on_train_epoch_start`` (this callback's hook runs after the
    default callbacks', so the curves drawn there are not counted) and stops when its validation
    starts or, without validation, at its end: the epoch's last step, the divergence check
    included, is counted, its validation and checkpoints are not.
    """

    def __init__(self, path: str, profile: str | None = None) -> None:
        self.path = Path(path)
        self.profile_path = Path(profile) if profile else None
        self.times: dict[str, list[float]] = {"wall": [], "cpu": []}
        self._start: tuple[float, float] | None = None
        self._profiler = cProfile.Profile() if profile else None

    @staticmethod
    def _wait(module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            return
        self._wait(pl_module)
        if self._profiler is not None:
            self._profiler.enable()
        self._start = (time.perf_counter(), time.process_time())

    def _stop(self, module: L.LightningModule) -> None:
        if self._start is None:
            return
        self._wait(module)
        wall, cpu = time.perf_counter() - self._start[0], time.process_time() - self._start[1]
        if self._profiler is not None:
            self._profiler.disable()
        self._start = None
        self.times["wall"].append(wall)
        self.times["cpu"].append(cpu)
        self.path.write_text(json.dumps(self.times))
        if self._profiler is not None and self.profile_path is not None:
            self._profiler.dump_stats(self.profile_path)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(pl_module)


def cifarlab_steps(
    root: Path, device: str, profile: Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, float]:
    """Microseconds per step (wall and CPU) of the timed epochs of one default ``train()`` run
    on the null network; the run's own output goes to stderr."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(str(REPO / "conf"), version_base="1.3"),
    ):
        times = Path(tmp) / "epoch_times.json"
        cfg = compose(
            "train",
            overrides=[
                "model=fc512",
                "model.width=1",
                "data.source=folder",
                f"data.root={root}",
                f"data.batch_size={BATCH_SIZE}",
                f"trainer.max_epochs={EPOCHS}",
                f"trainer.limit_train_batches={STEPS}",
                f"trainer.accelerator={device}",
                # the bar draws as on a terminal, on stderr: stdout keeps the table
                "+callbacks.progress_bar.console_kwargs={force_terminal:true,stderr:true}",
                f"paths.output_dir={tmp}",
                "+callbacks.step_clock._target_=bench_step_cost.StepClock",
                f"+callbacks.step_clock.path={times}",
                f"+callbacks.step_clock.profile={profile or 'null'}",
                *overrides,
            ],
        )
        with contextlib.redirect_stdout(sys.stderr):
            train(cfg)
        epochs = json.loads(times.read_text())
        return {clock: per_step(seconds) for clock, seconds in epochs.items()}


def raw_loop_steps(root: Path, device: str) -> dict[str, float]:
    """Microseconds per step of the raw loop's timed epochs: the same network, data, optimizer and
    schedule (cifarlab's defaults: AdamW 3e-3, linear one-cycle)."""
    cfg = default_config()
    split = train_split(root)
    net = FC512(width=1).to(device)
    images, labels = split.images.to(device), split.labels.to(device)
    wall, cpu = [], []
    for _ in range(EPOCHS):
        start = time.process_time()
        wall += raw_epochs(
            net,
            images,
            labels,
            epochs=1,
            batch_size=BATCH_SIZE,
            lr=cfg.optimizer.lr,
            weight_decay=cfg.optimizer.weight_decay,
            pct_start=cfg.scheduler.pct_start,
            max_batches=STEPS,
        )
        cpu.append(time.process_time() - start)
    return {"wall": per_step(wall[1:]), "cpu": per_step(cpu[1:])}


class RawStep(L.LightningModule):
    """The raw loop's training step as a LightningModule, and nothing else. It steps its
    optimizer itself (manual optimization), as cifarlab's module does without gradient clipping
    or accumulation; ``automatic=True`` leaves the step to Lightning's automatic optimization."""

    def __init__(self, lr: float, weight_decay: float, pct_start: float, automatic: bool = False):
        super().__init__()
        self.net = FC512(width=1)
        self.lr, self.weight_decay, self.pct_start = lr, weight_decay, pct_start
        self.automatic_optimization = automatic

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        if not self.automatic_optimization:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            self.lr_schedulers().step()
        return loss

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.lr,
            total_steps=int(self.trainer.estimated_stepping_batches),
            pct_start=self.pct_start,
            anneal_strategy="linear",
            cycle_momentum=False,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def lightning_steps(root: Path, device: str) -> dict[str, float]:
    """Microseconds per step of the timed epochs of ``RawStep`` in a bare Trainer, with
    cifarlab's data module (the same batches as ``train()``)."""
    cfg = default_config()
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "epoch_times.json"
        trainer = L.Trainer(
            accelerator=device,
            devices=1,
            max_epochs=EPOCHS,
            limit_train_batches=STEPS,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[StepClock(str(times))],
            default_root_dir=tmp,
        )
        data = CIFAR10DataModule(source="folder", root=str(root), batch_size=BATCH_SIZE)
        module = RawStep(cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.scheduler.pct_start)
        trainer.fit(module, datamodule=data)
        epochs = json.loads(times.read_text())
    return {clock: per_step(seconds) for clock, seconds in epochs.items()}


def default_config() -> DictConfig:
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train")


def train_split(root: Path) -> ImageSet:
    data = CIFAR10DataModule(source="folder", root=str(root))
    data.setup()
    return data.splits["train"]


def per_step(epoch_seconds: list[float]) -> float:
    """Microseconds per step of epochs of ``STEPS`` steps."""
    return 1e6 * sum(epoch_seconds) / (STEPS * len(epoch_seconds))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}, {max(values):,.0f}]"


def owner(filename: str) -> str:
    """Which package a profiled function belongs to."""
    if filename == "~" or filename.startswith("<"):
        return "C functions (torch ops, builtins)"
    for package in ("cifarlab", "lightning", "torchmetrics", "rich", "torch", "hydra", "omegaconf"):
        if f"/{package}/" in filename:
            return package
    return "other Python (stdlib)"


def where(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line} {name}"


def profile_tables(path: Path, steps: int) -> str:
    """Markdown: own time by package, then the functions with the most own and cumulative time,
    in microseconds per step."""
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    by_owner: dict[str, float] = {}
    for key, (_, _, own, _, _) in stats.items():
        by_owner[owner(key[0])] = by_owner.get(owner(key[0]), 0.0) + own
    total = sum(by_owner.values())
    calls = sum(calls for _, calls, _, _, _ in stats.values())
    lines = [
        f"cProfile over {steps} steps: {1e6 * total / steps:,.0f} us per step under the profiler, "
        f"{calls / steps:,.0f} Python-level function calls per step",
        "",
        "| package | own time, us per step | share |",
        "| --- | --- | --- |",
    ]
    for name, own in sorted(by_owner.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {1e6 * own / steps:,.1f} | {own / total:.1%} |")
    for title, column in (("own", 2), ("cumulative", 3)):
        lines += [
            "",
            f"| function (by {title} time) | calls per step | own us/step | cumulative us/step |",
            "| --- | --- | --- | --- |",
        ]
        ranked = sorted(stats.items(), key=lambda kv: -kv[1][column])[:TOP]
        for key, (_, calls, own, cumulative, _) in ranked:
            lines.append(
                f"| `{where(key)}` | {calls / steps:.1f} | {1e6 * own / steps:,.1f} "
                f"| {1e6 * cumulative / steps:,.1f} |"
            )
    return "\n".join(lines)


SIDES = {
    "raw PyTorch loop": raw_loop_steps,
    "Lightning alone (bare LightningModule and Trainer)": lightning_steps,
    "cifarlab `train()`, default config": cifarlab_steps,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (every side)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (every side)")
    parser.add_argument("--profile", action="store_true", help="also profile one cifarlab run")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    torch.set_num_threads(args.threads)
    if args.device == "cpu":
        keep_freed_memory()
    train_split(args.root)  # builds the decoded cache if it is not there yet

    results: dict[str, list[dict[str, float]]] = {name: [] for name in SIDES}
    names = list(SIDES)
    for repeat in range(args.repeats):
        for name in names[repeat % 3 :] + names[: repeat % 3]:
            results[name].append(SIDES[name](args.root, args.device))
        print(
            f"repeat {repeat + 1}: " + ", ".join(f"{n}: {r[-1]}" for n, r in results.items()),
            file=sys.stderr,
        )
    raw, alone, ours = results.values()

    def paired(a: list[dict[str, float]], b: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{clock: x[clock] - y[clock] for clock in x} for x, y in zip(a, b, strict=True)]

    rows = {
        **results,
        "framework cost (cifarlab - raw, paired)": paired(ours, raw),
        "... of it Lightning's loop (Lightning alone - raw)": paired(alone, raw),
        "... of it cifarlab's features (cifarlab - Lightning alone)": paired(ours, alone),
    }
    print(
        f"\ntorch {torch.__version__}, lightning {L.__version__}, {args.device}, "
        f"{torch.get_num_threads()} thread(s); fc512 width 1, batch {BATCH_SIZE}, "
        f"{STEPS} steps/epoch, epochs 2-{EPOCHS} timed; median [min, max] of {args.repeats} "
        "repeats\n"
    )
    print("| us per step | wall-clock | CPU time (process) |\n| --- | --- | --- |")
    for name, runs in rows.items():
        walls, cpus = [r["wall"] for r in runs], [r["cpu"] for r in runs]
        print(f"| {name} | {spread(walls)} | {spread(cpus)} |")
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "steps.prof"
            cifarlab_steps(args.root, args.device, profile=path)
            print()
            print(profile_tables(path, STEPS * (EPOCHS - 1)))


if __name__ == "__main__":
    main()
