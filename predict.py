"""Predict pictures with a trained checkpoint: ``python predict.py ckpt_path=X input=photos/``.

``input`` is an image file, a folder (a folder of ``<class>/<images>`` is scored too), a quoted
glob or a list; conf/predict.yaml has the options. The exit code is 1 when a file could not be
read (the others are still predicted), 2 for a mistake in the input.
"""

import sys

import hydra
from omegaconf import DictConfig

import cifarlab.run.run_folders  # noqa: F401 (the ${unique_now:} resolver that names run folders)
from cifarlab.config import PredictConfig, validate
from cifarlab.inference.predict import predict as run_predict
from cifarlab.run.entry import run_entry
from cifarlab.run.provenance import record_run


def predict(cfg: DictConfig) -> dict:
    """Checks the config against its declaration before the checkpoint is read."""
    validate(cfg, PredictConfig)
    return run_predict(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    record_run(cfg.paths.output_dir, device=cfg.get("device", "auto"))
    if run_entry(predict, cfg)["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
