"""A stand-in for train.py in the search tests: the same Hydra app on the project's configs, whose
job writes the metrics.json a run would, from its parameters, in milliseconds and without torch.

``+fake.*`` overrides shape it: ``fail_trial`` / ``diverge_trial`` (a trial number),
``runs_log`` (a file each job appends "trial pid seed" to), ``barrier`` (a folder where the first
job of each worker waits until ``workers`` workers have started one).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cifarlab.errors import CifarlabError
from cifarlab.run.entry import run_entry

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def score(cfg: DictConfig) -> float:
    """A fake run's val/acc_best: best at lr 1e-2, a little higher with width and seed."""
    lr_term = 0.1 * abs(math.log10(cfg.optimizer.lr) + 2)
    return 0.8 - lr_term + cfg.model.width / 1000 + cfg.seed / 10000


def wait_for_workers(barrier: Path, workers: int) -> None:
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.iterdir())) < workers and time.monotonic() < deadline:
        time.sleep(0.05)


def fake_train(cfg: DictConfig) -> float | None:
    fake = cfg.get("fake") or {}
    trial = cfg.search.trial
    if fake.get("barrier"):
        wait_for_workers(Path(fake.barrier), int(fake.workers))
    if fake.get("runs_log"):
        with open(fake.runs_log, "a") as log:
            log.write(f"{trial} {os.getpid()} {cfg.seed}\n")
    if trial == fake.get("fail_trial"):
        raise CifarlabError(f"trial {trial} was told to fail")
    value = score(cfg)
    metrics = {
        "status": "diverged" if trial == fake.get("diverge_trial") else "completed",
        "val/acc_best": value,
        "test/acc": value - 0.01,
        "epochs": int(cfg.trainer.max_epochs),
        "wall_time_s": 0.5,
    }
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "metrics.json").write_text(json.dumps(metrics))
    return value


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_entry(fake_train, cfg)


if __name__ == "__main__":
    main()
