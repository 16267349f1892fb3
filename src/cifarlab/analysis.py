"""What the test accuracy hides: per-class precision, recall and F1, the class pairs the model
confuses most, the test images it gets most wrong (highest loss), and how far its probabilities
can be trusted (expected calibration error, reliability diagram, temperature scaling).

``ErrorAnalysis`` is a callback that every test (train.py's and eval.py's) runs with. It collects
the test logits in a torchmetrics ``Metric`` whose states are concatenated across DDP processes,
so the analysis covers every test image under any strategy; only the test path does work, never
a training step. Rank 0 writes the files into the run folder, draws into TensorBoard, and leaves
``test_analysis.json`` for the run report (cifarlab.run), which merges it into metrics.json: the
file also reaches the main process when ddp_spawn workers ran the test.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)
from torchmetrics.utilities import dim_zero_cat

from cifarlab.data.normalization import to_pictures
from cifarlab.errors import CifarlabError
from cifarlab.figures import (
    confusion_figure,
    hardest_images_figure,
    reliability_figure,
    rendered,
    save_pixels,
)
from cifarlab.files import write_atomic, write_json

ANALYSIS_FILE = "test_analysis.json"
CALIBRATION_BINS = 15
CONFUSED_PAIRS = 10
# above this many classes a confusion matrix or a bar per class is unreadable: figures show the
# MANY_CLASSES most confused classes, and the data files hold them all
MANY_CLASSES = 20


class EvalOutputs(Metric):
    """Every test logit and label, and per batch the ``num_hardest`` highest-loss images (the
    overall hardest are among them), kept on the device until the test ends."""

    full_state_update = False

    def __init__(self, num_hardest: int = 16) -> None:
        super().__init__()
        self.num_hardest = num_hardest
        for name in ("logits", "targets", "hard_images", "hard_logits", "hard_targets"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits = logits.detach().float()
        self.logits.append(logits)
        self.targets.append(targets)
        losses = F.cross_entropy(logits, targets, reduction="none")
        hard = losses.topk(min(self.num_hardest, len(losses))).indices
        self.hard_images.append(images[hard].detach().clone())
        self.hard_logits.append(logits[hard])
        self.hard_targets.append(targets[hard])

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            name: dim_zero_cat(getattr(self, name))
            for name in ("logits", "targets", "hard_images", "hard_logits", "hard_targets")
        }


@dataclass
class Calibration:
    """Accuracy, expected calibration error and negative log-likelihood of one set of logits."""

    acc: float
    ece: float
    nll: float

    @classmethod
    def of(cls, logits: torch.Tensor, targets: torch.Tensor) -> Calibration:
        n = logits.shape[1]
        probs = logits.float().softmax(dim=1)
        return cls(
            acc=float((logits.argmax(dim=1) == targets).float().mean()),
            ece=float(multiclass_calibration_error(probs, targets, n, n_bins=CALIBRATION_BINS)),
            nll=float(F.cross_entropy(logits.float(), targets)),
        )


def reliability_bins(logits: torch.Tensor, targets: torch.Tensor) -> list[dict[str, Any]]:
    """Images grouped by their top probability into equal-width bins (as torchmetrics' ECE
    bins them): per bin, how many, their mean confidence and how many were right."""
    confidence, predicted = logits.float().softmax(dim=1).max(dim=1)
    correct = (predicted == targets).float()
    edges = torch.linspace(0, 1, CALIBRATION_BINS + 1)
    which = torch.bucketize(confidence, edges[1:-1], right=True)
    bins = []
    for b in range(CALIBRATION_BINS):
        inside = which == b
        count = int(inside.sum())
        bins.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[inside].mean()) if count else None,
                "accuracy": float(correct[inside].mean()) if count else None,
            }
        )
    return bins


def per_class_scores(
    logits: torch.Tensor, targets: torch.Tensor, class_names: list[str]
) -> list[dict[str, Any]]:
    """Precision, recall (the class's accuracy) and F1 per class, by torchmetrics; a class with
    no test images has no recall or F1 (None, not 0) and a class never predicted no precision."""
    n = len(class_names)
    preds = logits.argmax(dim=1)
    args = {"num_classes": n, "average": None, "zero_division": 0}
    precision = multiclass_precision(preds, targets, **args).tolist()
    recall = multiclass_recall(preds, targets, **args).tolist()
    f1 = multiclass_f1_score(preds, targets, **args).tolist()
    support = torch.bincount(targets, minlength=n).tolist()
    predicted = torch.bincount(preds, minlength=n).tolist()
    return [
        {
            "class": name,
            "support": support[i],
            "precision": precision[i] if predicted[i] else None,
            "recall": recall[i] if support[i] else None,
            "f1": f1[i] if support[i] else None,
        }
        for i, name in enumerate(class_names)
    ]


def confused_pairs(
    matrix: torch.Tensor, class_names: list[str], top: int = CONFUSED_PAIRS
) -> list[dict[str, Any]]:
    """The off-diagonal cells of the confusion matrix (rows: true class) with the most images,
    largest first, with the share of the true class's images that went that way."""
    counts = matrix.clone()
    counts.fill_diagonal_(0)
    support = matrix.sum(dim=1)
    values, flat = counts.flatten().topk(min(top, counts.numel()))
    n = len(class_names)
    return [
        {
            "true": class_names[int(i) // n],
            "predicted": class_names[int(i) % n],
            "count": int(v),
            "share": float(v) / max(1, int(support[int(i) // n])),
        }
        for v, i in zip(values, flat, strict=True)
        if v > 0
    ]


def hardest(
    logits: torch.Tensor, targets: torch.Tensor, class_names: list[str], count: int
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Indices of the ``count`` highest-loss images, and per image its true and predicted class,
    the probability of the prediction and of the truth, and its loss."""
    losses = F.cross_entropy(logits.float(), targets, reduction="none")
    order = losses.topk(min(count, len(losses))).indices
    probs = logits.float().softmax(dim=1)
    rows = []
    for i in order.tolist():
        guess = int(probs[i].argmax())
        rows.append(
            {
                "true": class_names[int(targets[i])],
                "predicted": class_names[guess],
                "probability": float(probs[i, guess]),
                "probability_true": float(probs[i, targets[i]]),
                "loss": float(losses[i]),
            }
        )
    return order, rows


def analyse(
    outputs: dict[str, torch.Tensor],
    class_names: list[str],
    num_hardest: int,
    temperature: float | None = None,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """The analysis of one test (for metrics.json), its confusion matrix, and the hardest images
    in the order of the analysis' ``test/hardest`` rows."""
    logits, targets = outputs["logits"].cpu(), outputs["targets"].cpu()
    matrix = multiclass_confusion_matrix(logits.argmax(dim=1), targets, len(class_names))
    scores = per_class_scores(logits, targets, class_names)
    f1 = [row["f1"] for row in scores if row["f1"] is not None]
    order, hard_rows = hardest(
        outputs["hard_logits"].cpu(), outputs["hard_targets"].cpu(), class_names, num_hardest
    )
    before = Calibration.of(logits, targets)
    analysis: dict[str, Any] = {
        "test/ece": before.ece,
        "test/nll": before.nll,
        "test/f1_macro": sum(f1) / len(f1) if f1 else None,
        "test/per_class": scores,
        "test/confused_pairs": confused_pairs(matrix, class_names),
        "test/hardest": hard_rows,
        "test/reliability": reliability_bins(logits, targets),
    }
    if temperature is not None:
        after = Calibration.of(logits / temperature, targets)
        analysis["test/calibration"] = {
            "temperature": temperature,
            "before": vars(before),
            "after": vars(after),
        }
    return analysis, matrix, outputs["hard_images"].cpu()[order]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    write_atomic(path, write)


def _cell(value: Any) -> Any:
    return "" if value is None else round(value, 6) if isinstance(value, float) else value


def write_analysis_files(
    output_dir: Path, analysis: dict[str, Any], matrix: torch.Tensor, class_names: list[str]
) -> None:
    """The tables as CSV (the full confusion matrix among them) next to metrics.json."""
    scores = analysis["test/per_class"]
    columns = ["class", "support", "precision", "recall", "f1"]
    _write_csv(
        output_dir / "test_per_class.csv",
        columns,
        [[_cell(row[c]) for c in columns] for row in scores],
    )
    columns = ["true", "predicted", "count", "share"]
    _write_csv(
        output_dir / "test_confused_pairs.csv",
        columns,
        [[_cell(row[c]) for c in columns] for row in analysis["test/confused_pairs"]],
    )
    _write_csv(
        output_dir / "test_confusion_matrix.csv",
        ["true \\ predicted", *class_names],
        [[name, *row] for name, row in zip(class_names, matrix.tolist(), strict=True)],
    )
    columns = ["true", "predicted", "probability", "probability_true", "loss"]
    _write_csv(
        output_dir / "test_hardest.csv",
        columns,
        [[_cell(row[c]) for c in columns] for row in analysis["test/hardest"]],
    )
    write_json(output_dir / ANALYSIS_FILE, analysis)


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


class ErrorAnalysis(L.Callback):
    """Analyses every test this trainer runs (see the module docstring) and writes the results
    into ``output_dir``. With ``temperature_path`` (eval.py calibrate=true) it also scores the
    logits divided by the temperature stored there."""

    def __init__(
        self, output_dir: str | Path, num_hardest: int = 16, temperature_path: Path | None = None
    ) -> None:
        self.output_dir = Path(output_dir)
        self.num_hardest = num_hardest
        self.temperature_path = temperature_path
        self._outputs: EvalOutputs | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._outputs = EvalOutputs(self.num_hardest).to(pl_module.device)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        if isinstance(outputs, torch.Tensor) and self._outputs is not None:
            self._outputs.update(batch[0], outputs, batch[1])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._outputs is None or not self._outputs.logits:
            return
        collected = self._outputs.compute()  # every rank: the states are gathered across DDP
        self._outputs = None
        if not trainer.is_global_zero:
            return
        names = list(pl_module.class_names)
        temperature = read_temperature(self.temperature_path) if self.temperature_path else None
        analysis, matrix, images = analyse(collected, names, self.num_hardest, temperature)
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
        logger = _tensorboard(trainer)
        for tag, fig in figures.items():
            pixels = rendered(fig)
            save_pixels(pixels, self.output_dir / f"{tag.replace('/', '_')}.png")
            if logger is not None:
                logger.experiment.add_image(tag, pixels, trainer.global_step, dataformats="HWC")
        if logger is not None:
            for key in ("test/ece", "test/nll", "test/f1_macro"):
                if analysis[key] is not None:
                    logger.experiment.add_scalar(key, analysis[key], trainer.global_step)


def most_confused_block(
    matrix: torch.Tensor, class_names: list[str], size: int = MANY_CLASSES
) -> tuple[torch.Tensor, list[str]]:
    """The rows and columns of the ``size`` classes most involved in errors (as truth or as
    prediction), so a 100-class matrix shows its readable, informative part."""
    errors = matrix.clone()
    errors.fill_diagonal_(0)
    involved = errors.sum(dim=0) + errors.sum(dim=1)
    keep = involved.topk(min(size, len(class_names))).indices.sort().values
    return matrix[keep][:, keep], [class_names[int(i)] for i in keep]


def read_analysis(output_dir: Path) -> dict[str, Any]:
    """What ErrorAnalysis left in ``output_dir``; empty when the test ran without it."""
    path = output_dir / ANALYSIS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def temperature_path(ckpt_path: str | Path) -> Path:
    """Where a checkpoint's fitted temperature lives: beside it, never inside it."""
    return Path(f"{ckpt_path}.temperature.json")


def read_temperature(path: Path) -> float | None:
    """The temperature stored at ``path``; None when there is none. A damaged file is refused
    with what to do, not silently ignored."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())["temperature"]
    except (ValueError, KeyError, TypeError) as err:
        raise CifarlabError(
            f"{path} holds no temperature ({err}). Delete it, or fit it again with "
            "eval.py ckpt_path=<checkpoint> calibrate=true."
        ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise CifarlabError(
            f"{path}: temperature={value!r} must be a number > 0. Delete the file, or fit it "
            "again with eval.py ckpt_path=<checkpoint> calibrate=true."
        )
    if not math.isfinite(value):
        raise CifarlabError(f"{path}: temperature={value!r} is not finite. Delete the file.")
    return float(value)
