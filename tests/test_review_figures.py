"""The figures (cifarlab.review.figures) draw what they say: the bars are the accuracies, the cells
the row-normalized counts, the curves the history, the titles the predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image
from torchmetrics.functional.classification import multiclass_confusion_matrix

from cifarlab.review.figures import (
    confusion_figure,
    curves_figure,
    image_grid_figure,
    per_class_accuracy,
    per_class_figure,
    pyplot,
    save_png,
)

from .figure_helpers import PREDICTIONS, TARGETS, hand_counts


def test_torchmetrics_counts_as_by_hand_with_truth_in_rows() -> None:
    # the confusion matrix the callbacks draw (torchmetrics') has the true class in rows
    counted = multiclass_confusion_matrix(torch.tensor(PREDICTIONS), torch.tensor(TARGETS), 4)
    assert torch.equal(counted, hand_counts(TARGETS, PREDICTIONS, 4))
    assert counted[0].tolist() == [3, 0, 1, 0] and counted[3].sum() == 0


def test_per_class_accuracy_is_the_normalized_diagonal_or_none() -> None:
    matrix = hand_counts(TARGETS, PREDICTIONS, 4)
    acc = per_class_accuracy(matrix, ["a", "b", "c", "d"])
    assert acc == {"a": 0.75, "b": 1.0, "c": 0.6, "d": None}


def test_per_class_bars_are_the_accuracies_in_percent() -> None:
    fig = per_class_figure({"cat": 0.5, "dog": None, "frog": 0.875}, "val accuracy per class")
    (ax,) = fig.axes
    assert [bar.get_height() for bar in ax.patches] == [50.0, 0.0, 87.5]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["cat", "dog", "frog"]
    # each bar is labelled with its value, "-" where the class had no images
    assert [text.get_text() for text in ax.texts] == ["50", "-", "88"]
    assert ax.get_title() == "val accuracy per class" and ax.get_ylim() == (0, 105)
    pyplot().close(fig)


def test_confusion_cells_are_row_normalized_counts() -> None:
    matrix = hand_counts(TARGETS, PREDICTIONS, 4)
    fig = confusion_figure(matrix, ["a", "b", "c", "d"], "test (best checkpoint)")
    ax = fig.axes[0]
    shown = np.asarray(ax.images[0].get_array())
    expected = np.array(
        [[0.75, 0, 0.25, 0], [0, 1, 0, 0], [0.2, 0.2, 0.6, 0], [0, 0, 0, 0]], dtype=float
    )
    np.testing.assert_allclose(shown, expected)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert cells[(0, 0)].get_text() == "0.75" and cells[(2, 0)].get_text() == "0.20"
    assert cells[(1, 1)].get_color() == "white" and cells[(0, 2)].get_color() == "black"
    assert ax.get_ylabel() == "true" and ax.get_xlabel() == "predicted"
    pyplot().close(fig)
    # too many classes for a readable number in each cell: colours only
    big = confusion_figure(torch.eye(13, dtype=torch.long), [str(i) for i in range(13)], "t")
    assert len(big.axes[0].texts) == 0
    pyplot().close(big)


def test_prediction_grid_marks_wrong_predictions_red() -> None:
    images = torch.rand(3, 32, 32, 3)
    fig = image_grid_figure(
        images, ["cat", "dog"], torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1])
    )
    (ax,) = fig.axes  # one picture of all the images
    titles = [(text.get_text(), text.get_color()) for text in ax.texts]
    assert titles[0] == ("GT cat\nPred cat", "tab:green")
    assert titles[1] == ("GT dog\nPred cat", "tab:red")
    assert titles[2][1] == "tab:green"
    frames = [(frame.get_edgecolor(), frame.get_linewidth()) for frame in ax.patches]
    assert frames[1] == (to_rgba("tab:red"), 2.5) and frames[0][0] == to_rgba("tab:green")
    # each image sits right under its title
    grid = np.asarray(ax.images[0].get_array())
    x, y = ax.texts[1].get_position()
    left, top = round(x - 16), round(y + 1)
    np.testing.assert_allclose(grid[top : top + 32, left : left + 32], images[1].numpy())
    pyplot().close(fig)


def test_training_grid_titles_are_the_labels() -> None:
    images = torch.rand(10, 32, 32, 3)
    fig = image_grid_figure(images, ["cat", "dog"], torch.tensor([0, 1] * 5))
    (ax,) = fig.axes
    assert [text.get_text() for text in ax.texts] == ["cat", "dog"] * 5
    assert not ax.patches  # frames only mark right and wrong predictions
    assert np.asarray(ax.images[0].get_array()).shape == (2 * 38, 8 * 36, 3)  # 2 rows of 8
    pyplot().close(fig)


def test_curves_are_the_history_per_epoch() -> None:
    history = {
        1: {"train/loss": 2.0, "train/acc": 0.3, "val/loss": 1.8, "val/acc": 0.4},
        2: {"train/loss": 1.5, "train/acc": 0.5, "val/loss": 1.6, "val/acc": 0.45},
    }
    fig = curves_figure(history, "lenet: per-epoch curves")
    loss, acc = fig.axes
    assert [list(line.get_ydata()) for line in loss.lines] == [[2.0, 1.5], [1.8, 1.6]]
    assert [list(line.get_xdata()) for line in acc.lines] == [[1, 2], [1, 2]]
    assert [line.get_ydata() for line in acc.lines][1] == pytest.approx([40.0, 45.0])
    assert [line.get_label() for line in acc.lines] == ["train", "val"]
    pyplot().close(fig)


def test_save_png_writes_the_figure_and_frees_it(tmp_path: Path) -> None:
    fig = per_class_figure({"cat": 1.0}, "t")
    save_png(fig, tmp_path / "bars.png")
    with Image.open(tmp_path / "bars.png") as png:
        assert png.format == "PNG" and png.size == (400, 320)  # 4 x 3.2 inches at 100 dpi
    assert not pyplot().fignum_exists(fig.number)
