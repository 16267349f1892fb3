"""What a finished run leaves for people: the per-class table, a bar chart and metrics.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cifarlab.review.analysis import MANY_CLASSES
from cifarlab.review.figures import per_class_figure, save_png


def per_class_from(
    results: Mapping[str, float], stage: str, classes: Sequence[str]
) -> dict[str, float | None]:
    """Accuracy per class; None for a class with no images in the evaluated part (not logged)."""
    found = {name: results.get(f"{stage}/acc_class/{name}") for name in classes}
    return {name: None if acc is None else float(acc) for name, acc in found.items()}


# above MANY_CLASSES classes the console lists only the worst and best SHOWN_CLASSES of them
SHOWN_CLASSES = 5


def print_accuracy_table(title: str, overall: float, per_class: Mapping[str, float | None]) -> None:
    """Prints per-class accuracy, worst class first, with the overall figure as the last row; a
    class with no images shows "-" at the end. With more than MANY_CLASSES classes only the
    worst and best few are listed (all of them are in metrics.json and test_per_class.csv)."""
    console = Console()
    console.print(f"\n[bold]{title}[/bold]")
    table = Table()
    table.add_column("class")
    table.add_column("accuracy %", justify="right")
    known = sorted((acc, name) for name, acc in per_class.items() if acc is not None)
    missing = [name for name, acc in per_class.items() if acc is None]
    if len(per_class) > MANY_CLASSES:
        hidden = len(known) - 2 * SHOWN_CLASSES
        if hidden > 0:
            known = [
                *known[:SHOWN_CLASSES],
                (None, f"... {hidden} more ..."),
                *known[-SHOWN_CLASSES:],
            ]
        missing = [f"{len(missing)} classes without images"] if missing else []
    for acc, name in known:
        table.add_row(name, "" if acc is None else f"{100 * acc:.1f}")
    for name in missing:
        table.add_row(name, "-")
    table.add_section()
    table.add_row("[bold]overall[/bold]", f"[bold]{100 * overall:.2f}[/bold]")
    console.print(table)


def plot_per_class(path: Path, title: str, per_class: Mapping[str, float | None]) -> None:
    """Writes the per-class bar chart (the one TensorBoard shows) next to the run's outputs;
    with more than MANY_CLASSES classes, the MANY_CLASSES worst (all are in metrics.json)."""
    if len(per_class) > MANY_CLASSES:
        worst = sorted((acc, name) for name, acc in per_class.items() if acc is not None)
        per_class = {name: acc for acc, name in worst[:MANY_CLASSES]}
        title += f", the {len(per_class)} worst classes"
    save_png(per_class_figure(per_class, title), path)


def print_analysis(metrics: Mapping[str, Any], pairs: int = 5) -> None:
    """The short console form of the error analysis (cifarlab.review.analysis): calibration, macro
    F1 and the most confused pairs; the full tables are in metrics.json and the CSV files."""
    if "test/ece" not in metrics:
        return
    console = Console()
    f1 = metrics.get("test/f1_macro")
    console.print(
        f"macro F1 {'-' if f1 is None else f'{100 * f1:.1f}%'}, "
        f"ECE {metrics['test/ece']:.4f}, NLL {metrics['test/nll']:.4f}"
    )
    calibration = metrics.get("test/calibration")
    if calibration:
        before, after = calibration["before"], calibration["after"]
        console.print(
            f"temperature {calibration['temperature']:.3f}: accuracy "
            f"{100 * before['acc']:.2f}% -> {100 * after['acc']:.2f}%, ECE {before['ece']:.4f} "
            f"-> {after['ece']:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f}"
        )
    confused = metrics.get("test/confused_pairs") or []
    if confused:
        table = Table(title="most confused (true -> predicted)")
        for column in ("true", "predicted", "images", "% of true class"):
            table.add_column(column, justify="left" if column in ("true", "predicted") else "right")
        for row in confused[:pairs]:
            table.add_row(
                row["true"], row["predicted"], str(row["count"]), f"{100 * row['share']:.1f}"
            )
        console.print(table)
