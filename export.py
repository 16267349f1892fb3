"""Export a checkpoint's network: ``python export.py ckpt_path=X format=onnx``.

Formats: state_dict, torchscript, onnx. Writes the bare network (no Lightning) next to the
checkpoint, or to ``output=PATH``, with a JSON sidecar (class names, normalization, input shape);
conf/export.yaml has the options.
"""

import hydra
from omegaconf import DictConfig

import cifarlab.run.run_folders  # noqa: F401 (the ${unique_now:} resolver that names run folders)
from cifarlab.config import ExportConfig, validate
from cifarlab.inference.export import export as run_export
from cifarlab.run.entry import run_entry
from cifarlab.run.provenance import record_run


def export(cfg: DictConfig) -> dict:
    """Checks the config against its declaration before the checkpoint is read."""
    validate(cfg, ExportConfig)
    return run_export(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    record_run(cfg.paths.output_dir, device="cpu")  # the network is exported on the CPU
    run_entry(export, cfg)


if __name__ == "__main__":
    main()
