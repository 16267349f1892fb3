"""Test a checkpoint: ``python eval.py ckpt_path=logs/train/runs/<time>/checkpoints/X.ckpt``.

The model, its classes and its data settings come from the checkpoint; ``data.root=...`` and the
other ``data.*`` keys of conf/eval.yaml override them.
"""

import hydra
from omegaconf import DictConfig

import cifarlab.run.run_folders  # noqa: F401 (the ${unique_now:} resolver that names run folders)
from cifarlab.config import EvalConfig, validate
from cifarlab.run.entry import run_entry
from cifarlab.run.jobs import evaluate as run_evaluate


def evaluate(cfg: DictConfig) -> dict:
    """Checks the config against its declaration before the checkpoint is read."""
    validate(cfg, EvalConfig)
    return run_evaluate(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_entry(evaluate, cfg)


if __name__ == "__main__":
    main()
