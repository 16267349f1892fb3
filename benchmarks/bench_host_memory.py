"""Training speed on the CPU with and without ``hardware.keep_freed_host_memory`` (one table).

    uv run python benchmarks/bench_host_memory.py [--widths 32 64] [--batch 2000] [--repeats 2]

Each measurement is a fresh process (malloc settings are per process and cannot be undone): it
builds the fastnet of the given width (channels_last, whitened from random images), takes one
warm-up step and then ``--steps`` timed training steps (forward, backward, Muon/SGD step) on a
fixed random batch, and reports images per second, the CPU time in user space and in the kernel,
and the minor page faults. Modes alternate within each repeat, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

STEP_SCRIPT = """
import json, resource, sys, time
import torch
from cifarlab.models.fastnet import FastNet
from cifarlab.run.host_memory import keep_freed_memory
from cifarlab.training.optimizers import build_optimizer

width, batch, steps, keep = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if keep == "on":
    assert keep_freed_memory()
torch.manual_seed(0)
net = FastNet(width=width).to(memory_format=torch.channels_last)
net.init_whitening(torch.randn(500, 3, 32, 32))
optimizer = build_optimizer(
    net, {"name": "muon", "lr": 1.65, "momentum": 0.85, "nesterov": True, "weight_decay": 2.4e-3,
          "norm_lr_mult": 64, "bias_lr_mult": 64, "muon_lr": 0.24, "muon_momentum": 0.6}
)
x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (batch,))

def step():
    torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.2).backward()
    optimizer.step()
    optimizer.zero_grad()

step()
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "images_per_s": steps * batch / seconds,
    "user_s": after.ru_utime - before.ru_utime,
    "kernel_s": after.ru_stime - before.ru_stime,
    "minor_faults": after.ru_minflt - before.ru_minflt,
}))
"""


def measure(width: int, batch: int, steps: int, keep: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", STEP_SCRIPT, str(width), str(batch), str(steps), keep],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(
        f"fastnet training steps, batch {args.batch}, {args.steps} timed steps per process, "
        f"median [min, max] of {args.repeats}\n"
    )
    print(
        "| width | keep_freed_host_memory | images/s | user CPU s | kernel CPU s | minor faults |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for width in args.widths:
        runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for _ in range(args.repeats):
            for keep in runs:
                runs[keep].append(measure(width, args.batch, args.steps, keep))
        for keep, results in runs.items():
            cells = []
            for key in ("images_per_s", "user_s", "kernel_s", "minor_faults"):
                values = [r[key] for r in results]
                cells.append(
                    f"{statistics.median(values):.4g} [{min(values):.4g}, {max(values):.4g}]"
                )
            print(f"| {width} | {keep} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
