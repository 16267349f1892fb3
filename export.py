"""Export a checkpoint's network: ``python export.py ckpt_path=X format=onnx``.

Formats: state_dict, torchscript, onnx. Writes the bare network (no Lightning) next to the
checkpoint, or to ``output=PATH``, with a JSON sidecar (class names, normalization, input shape);
conf/export.yaml has the options.
"""

import hydra
from omegaconf import DictConfig

from cifarlab.export import export
from cifarlab.utils import run_entry


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_entry(export, cfg)


if __name__ == "__main__":
    main()
