"""The error analysis of every test (train.py's and eval.py's), under any strategy.

``ErrorAnalysis`` collects the test logits (cifarlab.callbacks.eval_outputs), concatenated across
DDP processes, so the analysis (cifarlab.review.analysis) covers every test
image; only the test path does work, never a training step. Rank 0 writes the files into the run
folder and draws into TensorBoard; ``test_analysis.json`` also reaches the main process when
ddp_spawn workers ran the test.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from cifarlab.callbacks.eval_outputs import CollectsOutputs
from cifarlab.callbacks.tensorboard import run_tensorboard
from cifarlab.data.normalization import to_pictures
from cifarlab.inference.calibration import read_temperature
from cifarlab.review.analysis import (
    MANY_CLASSES,
    analyse,
    most_confused_block,
    write_analysis_files,
)
from cifarlab.review.figures import (
    confusion_figure,
    hardest_images_figure,
    reliability_figure,
    rendered,
    save_pixels,
)


class ErrorAnalysis(CollectsOutputs, loop="test"):
    """Analyses every test this trainer runs (see the module docstring) and writes the results
    into ``output_dir``. With ``temperature_path`` (eval.py calibrate=true) it also scores the
    logits divided by the temperature stored there."""

    def __init__(
        self, output_dir: str | Path, num_hardest: int = 16, temperature_path: Path | None = None
    ) -> None:
        super().__init__(num_hardest)
        self.output_dir = Path(output_dir)
        self.temperature_path = temperature_path

    def collected(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: dict[str, torch.Tensor]
    ) -> None:
        if not trainer.is_global_zero:
            return
        names = list(pl_module.class_names)
        temperature = read_temperature(self.temperature_path) if self.temperature_path else None
        analysis, matrix, images = analyse(outputs, names, self.num_hardest, temperature)
        data = pl_module.hparams.get("data") or {}  # a bare module may have no data settings
        pictures = to_pictures(images, data.get("normalize", "cifar10"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_analysis_files(self.output_dir, analysis, matrix, names)
        figures = {
            "test/reliability_diagram": reliability_figure(
                analysis["test/reliability"], f"test reliability (ECE {analysis['test/ece']:.3f})"
            ),
            "test/hardest_images": hardest_images_figure(pictures, analysis["test/hardest"]),
        }
        if len(names) > MANY_CLASSES:  # the whole matrix is in test_confusion_matrix.csv
            figures["test/confusion_matrix_most_confused"] = confusion_figure(
                *most_confused_block(matrix, names, MANY_CLASSES),
                f"test: the {MANY_CLASSES} most confused classes",
            )
        logger = run_tensorboard(trainer)
        for tag, fig in figures.items():
            pixels = rendered(fig)
            save_pixels(pixels, self.output_dir / f"{tag.replace('/', '_')}.png")
            if logger is not None:
                logger.experiment.add_image(tag, pixels, trainer.global_step, dataformats="HWC")
        if logger is not None:
            for key in ("test/ece", "test/nll", "test/f1_macro"):
                if analysis[key] is not None:
                    logger.experiment.add_scalar(key, analysis[key], trainer.global_step)
