"""What Lightning's own loop costs a training step, automatic against manual optimization.

    python benchmarks/bench_lightning_steps.py [--repeats 5]

The raw loop's step (``model=fc512 model.width=1``, batch 128, AdamW and the linear one-cycle
schedule) three ways on the same in-memory batches, in turns: a plain PyTorch loop; the step as a
bare LightningModule whose optimizer step Lightning takes (automatic optimization, with its
closure, hooks and progress records); and the same module stepping its optimizer itself
(manual optimization, what cifarlab's module does without gradient clipping or accumulation).
No data module, logger, bar or checkpoint. One torch thread, 300 steps an epoch, the second of
two epochs timed; microseconds per step, median [min, max] of the repeats and the paired
difference from the raw loop.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import lightning as L
import torch
import torch.nn.functional as F
from bench_step_cost import RawStep

from cifarlab.models.fc512 import FC512

STEPS = 300
BATCH_SIZE = 128
LR, WEIGHT_DECAY, PCT_START = 3e-3, 5e-4, 0.25


class Batches:
    """``STEPS`` batches of random images, the same tensors every epoch."""

    def __init__(self) -> None:
        self.x = torch.randn(BATCH_SIZE * STEPS, 3, 32, 32)
        self.y = torch.randint(0, 10, (BATCH_SIZE * STEPS,))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.x), BATCH_SIZE):
            yield self.x[i : i + BATCH_SIZE], self.y[i : i + BATCH_SIZE]

    def __len__(self) -> int:
        return STEPS


class EpochClock(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def lightning_step(batches: Batches, automatic: bool) -> float:
    clock = EpochClock()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(RawStep(LR, WEIGHT_DECAY, PCT_START, automatic=automatic), batches)
    return clock.seconds / STEPS * 1e6


def raw_step(batches: Batches) -> float:
    net = FC512(width=1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, LR, total_steps=2 * STEPS, pct_start=PCT_START, anneal_strategy="linear"
    )
    for _ in range(2):
        start = time.perf_counter()
        for x, y in batches:
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        seconds = time.perf_counter() - start
    return seconds / STEPS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = Batches()
    sides: dict[str, Callable[[], float]] = {
        "raw PyTorch loop": lambda: raw_step(batches),
        "Lightning, automatic optimization": lambda: lightning_step(batches, automatic=True),
        "Lightning, manual optimization": lambda: lightning_step(batches, automatic=False),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, side in sides.items():
            times[name].append(side())
    raw = times["raw PyTorch loop"]
    print(f"torch {torch.__version__}, lightning {L.__version__}, {args.repeats} repeats\n")
    print("| us per step, wall-clock | median [min, max] | over the raw loop (paired median) |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        over = statistics.median(v - r for v, r in zip(values, raw, strict=True))
        spread = f"{statistics.median(values):,.0f} [{min(values):,.0f}, {max(values):,.0f}]"
        print(f"| {name} | {spread} | {over:,.0f} |")


if __name__ == "__main__":
    main()
