"""What a finished run leaves for people: the per-class table, a bar chart and metrics.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cifarlab.utils import write_atomic


def per_class_from(
    results: Mapping[str, float], stage: str, classes: Sequence[str]
) -> dict[str, float | None]:
    """Accuracy per class; None for a class with no images in the evaluated part (not logged)."""
    found = {name: results.get(f"{stage}/acc_class/{name}") for name in classes}
    return {name: None if acc is None else float(acc) for name, acc in found.items()}


def print_accuracy_table(title: str, overall: float, per_class: Mapping[str, float | None]) -> None:
    """Prints per-class accuracy, worst class first, with the overall figure as the last row; a
    class with no images shows "-" at the end."""
    console = Console()
    console.print(f"\n[bold]{title}[/bold]")
    table = Table()
    table.add_column("class")
    table.add_column("accuracy %", justify="right")
    known = sorted((acc, name) for name, acc in per_class.items() if acc is not None)
    for acc, name in known:
        table.add_row(name, f"{100 * acc:.1f}")
    for name in (name for name, acc in per_class.items() if acc is None):
        table.add_row(name, "-")
    table.add_section()
    table.add_row("[bold]overall[/bold]", f"[bold]{100 * overall:.2f}[/bold]")
    console.print(table)


def plot_per_class(path: Path, title: str, per_class: Mapping[str, float | None]) -> None:
    """Writes a bar chart of per-class accuracy next to the run's other outputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(per_class)), 3.2), layout="constrained")
    names, values = list(per_class), [100 * (v or 0.0) for v in per_class.values()]
    bars = ax.bar(names, values, color="tab:blue")
    labels = ["-" if v is None else f"{100 * v:.0f}" for v in per_class.values()]
    ax.bar_label(bars, labels=labels, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy %")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
