"""What a finished run leaves for people: the per-class table, a bar chart and metrics.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cifarlab.figures import per_class_figure, save_png


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
    """Writes the per-class bar chart (the one TensorBoard shows) next to the run's outputs."""
    save_png(per_class_figure(per_class, title), path)
