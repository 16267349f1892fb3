"""Every figure cifarlab draws, in one place, so TensorBoard and the run directory show the same.

Each ``*_figure`` function returns a matplotlib Figure: the TensorBoard callbacks
(cifarlab.callbacks) pass it to ``add_figure``, and ``save_png`` writes it into the run directory
(cifarlab.review.report, cifarlab.callbacks.curves, cifarlab.run.tune). matplotlib is imported on
first use with the Agg backend, so no display is needed and importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cifarlab.files import write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files and TensorBoard images, no window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Figure, path: Path) -> None:
    """Writes ``fig`` to ``path`` atomically (a reader never sees half a PNG), then frees it."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    pyplot().close(fig)


def per_class_accuracy(matrix: torch.Tensor, class_names: Sequence[str]) -> dict[str, float | None]:
    """Accuracy per class from a confusion matrix (rows: true class); None for a class with no
    images, whose accuracy is unknown rather than 0."""
    counts = matrix.double()
    support = counts.sum(dim=1)
    acc = counts.diagonal() / support.clamp(min=1)
    return {
        name: float(a) if n > 0 else None
        for name, a, n in zip(class_names, acc.tolist(), support.tolist(), strict=True)
    }


def per_class_figure(per_class: Mapping[str, float | None], title: str) -> Figure:
    """Bar chart of per-class accuracy (fractions, shown in %); a class with no images ("-" on
    its bar) has a bar of height 0."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(per_class)), 3.2), layout="constrained")
    names, values = list(per_class), [100 * (v or 0.0) for v in per_class.values()]
    bars = ax.bar(names, values, color="tab:blue")
    labels = ["-" if v is None else f"{100 * v:.0f}" for v in per_class.values()]
    ax.bar_label(bars, labels=labels, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy %")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45)
    return fig


def confusion_figure(matrix: torch.Tensor, class_names: Sequence[str], title: str) -> Figure:
    """Row-normalized confusion matrix (rows: true class), each cell annotated when it fits."""
    plt = pyplot()
    counts = matrix.double()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(class_names)
    size = max(4.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), layout="constrained")
    shown = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 12:
        # the numbers sit inside the axes, so the layout need not measure them (it took half
        # the time of drawing the figure)
        for i, row in enumerate(rates.tolist()):
            for j, value in enumerate(row):
                color = "white" if value > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=color,
                    in_layout=False,
                )
    fig.colorbar(shown, ax=ax, fraction=0.046)
    return fig


def image_grid_figure(
    images: torch.Tensor,
    class_names: Sequence[str],
    labels: torch.Tensor,
    predictions: torch.Tensor | None = None,
) -> Figure:
    """A grid of (N, H, W, 3) images in [0, 1] titled with their label, or with truth and
    prediction.

    With predictions, wrong ones get a red title and frame, right ones green, so errors stand out.
    The grid is one picture on one axes: a subplot per image costs a whole axes to build, lay out
    and draw (32 of them took half a second a figure).
    """
    from matplotlib.patches import Rectangle

    plt = pyplot()
    n, height, width = images.shape[0], images.shape[1], images.shape[2]
    cols = min(8, max(1, n))
    rows = max(1, -(-n // cols))
    lines = 1 if predictions is None else 2  # title lines above each image
    gap_x, gap_y = width // 8, (height * (1 + 2 * lines)) // 16  # room for the titles
    cell_w, cell_h = width + gap_x, height + gap_y
    grid = torch.ones(rows * cell_h, cols * cell_w, 3)
    fig, ax = plt.subplots(figsize=(1.4 * cols, (1.2 + 0.2 * lines) * rows))
    for k in range(n):
        top, left = (k // cols) * cell_h + gap_y, (k % cols) * cell_w + gap_x // 2
        grid[top : top + height, left : left + width] = images[k]
        truth = class_names[int(labels[k])]
        title, color = truth, "black"
        if predictions is not None:
            guess = class_names[int(predictions[k])]
            title, color = (
                f"GT {truth}\nPred {guess}",
                ("tab:green" if guess == truth else "tab:red"),
            )
            frame = Rectangle(
                (left - 0.5, top - 0.5),
                width,
                height,
                fill=False,
                edgecolor=color,
                linewidth=2.5 if guess != truth else 1.0,
            )
            ax.add_patch(frame)
        ax.text(
            left + width / 2,
            top - 1,
            title,
            ha="center",
            va="bottom",
            fontsize=8 if predictions is None else 7,
            color=color,
        )
    ax.imshow(grid.numpy(), interpolation="nearest")
    ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
    return fig


def curves_figure(history: Mapping[int, Mapping[str, float]], title: str) -> Figure:
    """Loss and accuracy per epoch (rows of cifarlab.callbacks.curves' history), train and
    validation on the same axes."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    epochs = sorted(history)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for ax, metric in zip(axes, ("loss", "acc"), strict=True):
        for stage, style in (("train", "-o"), ("val", "-s")):
            values = [history[e][f"{stage}/{metric}"] for e in epochs]
            if metric == "acc":
                values = [100 * v for v in values]
            ax.plot(epochs, values, style, markersize=3, label=stage)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy %" if metric == "acc" else "cross-entropy loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def reliability_figure(bins: Sequence[Mapping[str, Any]], title: str) -> Figure:
    """Reliability diagram: per confidence bin the accuracy (bars) against the diagonal a
    calibrated model follows, and how many images fell into each bin (lower panel)."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.2, 5), height_ratios=(3, 1), sharex=True, layout="constrained"
    )
    width = bins[0]["high"] - bins[0]["low"]
    lows = [b["low"] for b in bins]
    top.bar(
        lows,
        [b["accuracy"] or 0.0 for b in bins],
        width=width,
        align="edge",
        edgecolor="black",
        color="tab:blue",
        label="accuracy",
    )
    top.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    shown = [b for b in bins if b["count"]]
    top.plot(
        [b["confidence"] for b in shown],
        [b["accuracy"] for b in shown],
        "o",
        color="tab:red",
        markersize=3,
        label="mean confidence",
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(title)
    top.legend(fontsize=7, loc="upper left")
    bottom.bar(lows, [b["count"] for b in bins], width=width, align="edge", color="tab:gray")
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("images")
    return fig


def hardest_images_figure(images: torch.Tensor, rows: Sequence[Mapping[str, Any]]) -> Figure:
    """The highest-loss test images, (N, H, W, 3) in [0, 1], each titled with its true class,
    the prediction and the probability the model gave that prediction (red: wrong).

    One axes shows them all as a single montage: a subplot per image costs a whole axes to lay
    out and draw, and this figure is drawn at the end of every test."""
    plt = pyplot()
    n, height, width = images.shape[0], images.shape[1], images.shape[2]
    cols = min(8, max(1, n))
    rows_count = max(1, -(-n // cols))
    gap_x, gap_y = width // 8, height // 2  # room for the two-line titles above each image
    cell_w, cell_h = width + gap_x, height + gap_y
    montage = torch.ones(rows_count * cell_h, cols * cell_w, 3)
    fig, ax = plt.subplots(figsize=(1.5 * cols, 1.8 * rows_count + 0.3))
    for k in range(n):
        top, left = (k // cols) * cell_h + gap_y, (k % cols) * cell_w
        montage[top : top + height, left : left + width] = images[k]
        row = rows[k]
        ax.text(
            left + width / 2,
            top - 1,
            f"GT {row['true']}\nPred {row['predicted']} {100 * row['probability']:.0f}%",
            ha="center",
            va="bottom",
            fontsize=7,
            color="tab:green" if row["predicted"] == row["true"] else "tab:red",
        )
    ax.imshow(montage.numpy(), interpolation="nearest")
    ax.axis("off")
    ax.set_title("hardest test images (highest loss)", fontsize=9)
    fig.tight_layout()
    return fig


def rendered(fig: Figure) -> Any:
    """The figure drawn once into an (H, W, 3) uint8 array, and freed: both the PNG file and
    TensorBoard's image are written from it, where ``add_figure`` would draw it a second time."""
    import numpy as np

    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    pyplot().close(fig)
    return pixels


def save_pixels(pixels: Any, path: Path) -> None:
    """Writes an (H, W, 3) uint8 array as a PNG, atomically."""
    from PIL import Image

    write_atomic(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="png"))
