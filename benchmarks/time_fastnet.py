"""Times ``experiment=fastnet`` the way airbench times itself, over several runs, in one table.

On a GPU machine (see benchmarks/gpu_check.py for the setup without network):

    python3 benchmarks/time_fastnet.py --root DATA/cifar10-jpg --runs 5 --out $OUT \\
        trainer=gpu trainer.precision=bf16-mixed model.compile=true

airbench's clock runs from the start of training (the data already on the device) to the end of
the final evaluation with TTA, the device synchronized at both ends; data loading and compilation
are left out and reported separately. So run 0 here is a warm-up that compiles (its time is
reported as such, not counted), and runs 1..N are timed; all run in this one process, as
airbench's do, so compiled kernels are reused. Each run is ``cifarlab.run.train`` with the
recipe and the given overrides, its own seed (1..N) and the ``AirbenchClock`` callback of
benchmarks/timing_callbacks.py. The table gives each run's training and test time, their sum
(airbench's figure), the setup time and the test accuracy with and without TTA, then mean and
range. On the CPU, ``--smoke`` runs every part on tiny settings (the figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from hydra import compose, initialize_config_dir

from cifarlab.run import train

CONF = Path(__file__).resolve().parents[1] / "conf"
SMOKE = [
    "model.width=4",
    "trainer.max_epochs=1",
    "data.batch_size=100",
    "trainer.limit_train_batches=3",
]


def one_run(root: Path, out: Path, index: int, overrides: list[str]) -> dict[str, float]:
    clock = out / f"clock_{index}.json"
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "experiment=fastnet",
                "data.source=folder",
                f"data.root={root}",
                f"seed={index}",
                f"paths.output_dir={out / f'run_{index}'}",
                "callbacks.progress_bar=null",
                "trainer.enable_progress_bar=false",
                "+callbacks.clock._target_=timing_callbacks.AirbenchClock",
                f"+callbacks.clock.path={clock}",
                *overrides,
            ],
        )
    metrics = train(cfg)
    record = json.loads(clock.read_text())
    return {
        **record,
        "airbench_s": record["train_s"] + record["test_s"],
        "acc": 100 * metrics["test/acc"],
        "acc_no_tta": 100 * metrics["test/acc_no_tta"],
    }


def table(runs: list[dict[str, float]]) -> str:
    keys = ("train_s", "test_s", "airbench_s", "setup_s", "acc", "acc_no_tta")
    lines = [
        "| run | " + " | ".join(keys) + " |",
        "| --- |" + " --- |" * len(keys),
    ]
    for i, run in enumerate(runs):
        name = "0 (warm-up, not counted)" if i == 0 else str(i)
        lines.append(f"| {name} | " + " | ".join(f"{run[k]:.2f}" for k in keys) + " |")
    timed = runs[1:]
    if timed:
        cells = []
        for k in keys:
            values = [run[k] for run in timed]
            cells.append(f"{statistics.mean(values):.2f} [{min(values):.2f}, {max(values):.2f}]")
        lines.append(f"| mean [min, max] of {len(timed)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder-source CIFAR-10")
    parser.add_argument("--runs", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument("--out", type=Path, default=Path("logs/time_fastnet"))
    parser.add_argument("--smoke", action="store_true", help="tiny settings, every part runs")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer=gpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = [*(SMOKE if args.smoke else []), *args.overrides]
    runs = []
    for index in range(args.runs + 1):
        runs.append(one_run(args.root.resolve(), args.out.resolve(), index, overrides))
        (args.out / "time_fastnet.json").write_text(json.dumps(runs, indent=1))
    text = f"experiment=fastnet, overrides: {' '.join(overrides) or 'none'}\n\n{table(runs)}\n"
    (args.out / "time_fastnet.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
