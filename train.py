"""Train a model on CIFAR-10: ``python train.py model=lenet trainer.max_epochs=2``.

Configs live in conf/ (train.yaml is the entry); ``python train.py --help`` lists the groups
and every key.
"""

import hydra
from omegaconf import DictConfig

import cifarlab.run.run_folders  # noqa: F401 (the ${unique_now:} resolver that names run folders)
from cifarlab.config import TrainConfig, validate
from cifarlab.run.entry import run_entry


def train(cfg: DictConfig) -> dict:
    """Checks the config against its declaration first, so --help and mistakes answer at once;
    Lightning, torchmetrics and torchvision are imported only when training starts."""
    validate(cfg, TrainConfig)
    from cifarlab.run.jobs import train as run_train

    return run_train(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_entry(train, cfg)
    # a diverged run has no objective value: Optuna records the trial as failed, sweeps leave it out
    return metrics.get(cfg.optimized_metric) if metrics.get("status") == "completed" else None


if __name__ == "__main__":
    main()
