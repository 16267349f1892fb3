"""What the test accuracy hides: per-class precision, recall and F1, the class pairs the model
confuses most, the test images it gets most wrong (highest loss), and how far its probabilities
can be trusted (expected calibration error, reliability diagram, temperature scaling).

The numbers come from a test's logits and labels (cifarlab.callbacks.error_analysis collects them
under any strategy); ``write_analysis_files`` leaves the tables as CSV in the run folder and
``test_analysis.json`` for the run report (cifarlab.run.records), which merges it into
metrics.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from cifarlab.files import write_json
from cifarlab.review.tables import write_csv

ANALYSIS_FILE = "test_analysis.json"
CALIBRATION_BINS = 15
CONFUSED_PAIRS = 10
# above this many classes a confusion matrix or a bar per class is unreadable: figures show the
# MANY_CLASSES most confused classes, and the data files hold them all
MANY_CLASSES = 20


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


def _cell(value: Any) -> Any:
    return "" if value is None else round(value, 6) if isinstance(value, float) else value


def write_analysis_files(
    output_dir: Path, analysis: dict[str, Any], matrix: torch.Tensor, class_names: list[str]
) -> None:
    """The tables as CSV (the full confusion matrix among them) next to metrics.json."""
    scores = analysis["test/per_class"]
    columns = ["class", "support", "precision", "recall", "f1"]
    write_csv(
        output_dir / "test_per_class.csv",
        columns,
        [[_cell(row[c]) for c in columns] for row in scores],
    )
    columns = ["true", "predicted", "count", "share"]
    write_csv(
        output_dir / "test_confused_pairs.csv",
        columns,
        [[_cell(row[c]) for c in columns] for row in analysis["test/confused_pairs"]],
    )
    write_csv(
        output_dir / "test_confusion_matrix.csv",
        ["true \\ predicted", *class_names],
        [[name, *row] for name, row in zip(class_names, matrix.tolist(), strict=True)],
    )
    columns = ["true", "predicted", "probability", "probability_true", "loss"]
    write_csv(
        output_dir / "test_hardest.csv",
        columns,
        [[_cell(row[c]) for c in columns] for row in analysis["test/hardest"]],
    )
    write_json(output_dir / ANALYSIS_FILE, analysis)


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
