"""Times ``experiment=fastnet`` as airbench94_muon times itself, over several runs, in one table.

On a GPU machine (docs/benchmarks.md, "GPU: the one prepared check", says how to get one ready):

    python3 benchmarks/time_fastnet.py --root /tmp/data/cifar10-jpg --runs 5 --out $OUT \\
        trainer=gpu trainer.precision=bf16-mixed model.compile=true

airbench's clock runs from the start of training (the data already on the device) to the end of
the final evaluation with TTA, the device synchronized at both ends; data loading and compilation
are left out and reported separately. A timed run here is what airbench94_muon times and no more:

- the recipe's training and its test, for 8 epochs (``--epochs``), airbench94_muon's count;
- no logger, checkpoints, figures, curves, model summary or progress bar (``TIMED``): the test
  reads the final weights, as airbench does;
- the test in batches of the training batch (airbench evaluates in batches of 2000), so the test
  uses no second input shape that would need a graph of its own.

All runs share this process and one ``ClassifierModule``, so that run 0, a warm-up that compiles
(reported as such, not counted), leaves its compiled graphs to runs 1..N: each run puts fresh
weights into the same net in place (seeded by the run's index), as airbench94_muon's
``model.reset()`` does, and reseeds the data order. The graphs torch.compile makes during each run
are counted and its recompile reasons logged (``CompileWatch``): a timed run that compiled anything
says so in the table. The table gives each run's training and test time, their sum (airbench's
figure), the setup time, the test accuracy with and without TTA and the graphs compiled, then mean
and range. On the CPU, ``--smoke`` runs every part on tiny settings (the figures mean nothing), and
``--compile-backend eager`` lets torch.compile capture graphs without generating code.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch._dynamo.utils import counters

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from timing_callbacks import AirbenchClock  # noqa: E402

from cifarlab.models import build_from_config  # noqa: E402
from cifarlab.run.build import build_fit_trainer, build_task  # noqa: E402
from cifarlab.utils import to_plain_dict  # noqa: E402

CONF = HERE.parent / "conf"
EPOCHS = 8  # airbench94_muon's
# what a timed run leaves out: every callback of conf/callbacks/ (progress bar, model summary,
# curves, figures, lr monitor, checkpoints), the loggers, and Lightning's own defaults of those
TIMED = [
    "~logger",
    "~callbacks",
    "trainer.enable_checkpointing=false",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "+callbacks.clock._target_=timing_callbacks.AirbenchClock",
]
SMOKE = ["model.width=4", "data.batch_size=100", "trainer.limit_train_batches=3"]


def timed_config(root: Path, out: Path, epochs: int, overrides: list[str]) -> DictConfig:
    """The recipe on the folder-source data at ``root`` as a timed run; ``overrides`` last."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "experiment=fastnet",
                "data.source=folder",
                f"data.root={root}",
                f"paths.output_dir={out}",
                f"trainer.max_epochs={epochs}",
                *TIMED,
                *overrides,
            ],
        )
    cfg.data.eval_batch_size = cfg.data.batch_size
    return cfg


class RecompileReasons(logging.Handler):
    """Keeps the messages of torch._dynamo's "recompiles" log (one per recompile)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def first_guard_failure(message: str) -> str:
    """The first failed guard of a recompile message ("0/0: GLOBAL_STATE changed: grad_mode")."""
    failures = [line.strip()[2:] for line in message.splitlines() if line.strip().startswith("- ")]
    return failures[0] if failures else message.splitlines()[0]


class CompileWatch:
    """Counts the graphs torch.compile makes while it is open and keeps the reason of each
    recompile. Graphs: torch._dynamo's own counter of compiled graphs
    (``counters["stats"]["unique_graphs"]``, which every backend goes through). Reasons: its
    "recompiles" log, switched on with ``torch._logging.set_logs(recompiles=True)``, which also
    prints each one on stderr. A first compilation is a graph but no recompile."""

    def __init__(self) -> None:
        self.graphs = 0
        self.recompiles: list[str] = []
        self._handler = RecompileReasons()
        self._before = 0

    def __enter__(self) -> CompileWatch:
        torch._logging.set_logs(recompiles=True)
        self._logger = torch._logging.getArtifactLogger("torch._dynamo.guards", "recompiles")
        self._logger.addHandler(self._handler)
        self._before = counters["stats"]["unique_graphs"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.graphs = counters["stats"]["unique_graphs"] - self._before
        self._logger.removeHandler(self._handler)
        self.recompiles = self._handler.messages


class TimedSession:
    """One process's data and ``ClassifierModule`` (compiled once when ``model.compile``),
    reused by every run: the data stays on the device and the compiled graphs stay valid."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.datamodule, self.module = build_task(cfg)

    def fresh_weights(self, seed: int) -> None:
        """New initial weights for the same net, copied in place (its parameters stay the same
        objects, on their device and in their memory format)."""
        L.seed_everything(seed, workers=True)
        fresh = build_from_config(to_plain_dict(self.cfg.model), len(self.datamodule.class_names))
        self.module.net.load_state_dict(fresh.state_dict())
        self.module.val_acc_best.reset()

    def run(self, index: int) -> dict[str, Any]:
        """Run ``index`` (its seed): fit, then test the final weights; airbench's clock."""
        self.fresh_weights(index)
        self.datamodule.seed = index  # the data order and augmentation of a run seeded so
        trainer = build_fit_trainer(self.cfg, record_provenance=False)
        (clock,) = [c for c in trainer.callbacks if isinstance(c, AirbenchClock)]
        with CompileWatch() as compiles:
            trainer.fit(self.module, datamodule=self.datamodule)
            results = trainer.test(self.module, datamodule=self.datamodule, verbose=False)[0]
        record = clock.record
        return {
            **record,
            "airbench_s": record["train_s"] + record["test_s"],
            "acc": 100 * float(results["test/acc"]),
            "acc_no_tta": 100 * float(results.get("test/acc_no_tta", results["test/acc"])),
            "graphs": compiles.graphs,
            "recompiles": compiles.recompiles,
        }


def time_runs(
    cfg: DictConfig,
    runs: int,
    after_each: Callable[[list[dict[str, Any]]], None] = lambda runs: None,
    time_left: Callable[[], float] = lambda: float("inf"),
) -> list[dict[str, Any]]:
    """The warm-up (run 0) and up to ``runs`` timed runs, ``after_each`` called with the runs so
    far after each. A run starts only while ``time_left()`` is positive and, once a timed run
    has shown how long one takes (the warm-up's time includes compilation), holds another."""
    session = TimedSession(cfg)
    done: list[dict[str, Any]] = []
    for index in range(runs + 1):
        last = done[-1] if len(done) > 1 else {"setup_s": 0.0, "airbench_s": 0.0}
        if time_left() <= last["setup_s"] + last["airbench_s"]:
            break
        done.append(session.run(index))
        after_each(done)
    return done


def compiled_note(index: int, run: dict[str, Any]) -> str:
    reasons = "; ".join(first_guard_failure(m) for m in run["recompiles"]) or "a new frame"
    return f"timed run {index} compiled {run['graphs']} graph(s) (recompiles: {reasons})"


def table(runs: list[dict[str, Any]]) -> str:
    """One row per run, mean and range of the timed ones, and a line for each timed run that
    compiled (its time includes compilation)."""
    keys = ("train_s", "test_s", "airbench_s", "setup_s", "acc", "acc_no_tta")
    lines = [
        "| run | " + " | ".join(keys) + " | graphs compiled |",
        "| --- |" + " --- |" * (len(keys) + 1),
    ]
    for i, run in enumerate(runs):
        name = "0 (warm-up, not counted)" if i == 0 else str(i)
        cells = " | ".join(f"{run[k]:.2f}" for k in keys)
        lines.append(f"| {name} | {cells} | {run['graphs']} |")
    timed = runs[1:]
    if timed:
        cells = []
        for k in keys:
            values = [run[k] for run in timed]
            cells.append(f"{statistics.mean(values):.2f} [{min(values):.2f}, {max(values):.2f}]")
        graphs = sum(run["graphs"] for run in timed)
        lines.append(f"| mean [min, max] of {len(timed)} | " + " | ".join(cells) + f" | {graphs} |")
    notes = [compiled_note(i, run) for i, run in enumerate(runs) if i and run["graphs"]]
    return "\n".join(lines) + "".join(f"\n\n{note}" for note in notes)


def write_results(out: Path, header: str, runs: list[dict[str, Any]]) -> str:
    text = f"{header}\n\n{table(runs)}\n"
    (out / "time_fastnet.md").write_text(text)
    (out / "time_fastnet.json").write_text(json.dumps(runs, indent=1))
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder-source CIFAR-10")
    parser.add_argument("--runs", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="airbench94_muon: 8")
    parser.add_argument("--out", type=Path, default=Path("logs/time_fastnet"))
    parser.add_argument("--smoke", action="store_true", help="tiny settings, every part runs")
    parser.add_argument(
        "--compile-backend",
        help="torch.compile's backend for model.compile=true, e.g. eager (graphs, no codegen)",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer=gpu")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = [*(SMOKE if args.smoke else []), *args.overrides]
    cfg = timed_config(args.root.resolve(), out / "work", args.epochs, overrides)
    header = f"experiment=fastnet, epochs={args.epochs}, overrides: {' '.join(overrides) or 'none'}"
    backend = args.compile_backend
    with torch.compiler.set_stance(force_backend=backend) if backend else nullcontext():
        runs = time_runs(cfg, args.runs, after_each=lambda runs: write_results(out, header, runs))
    print(write_results(out, header, runs))


if __name__ == "__main__":
    main()
