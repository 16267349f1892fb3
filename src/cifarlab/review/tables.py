"""Every table cifarlab writes, as CSV or as markdown, in one format.

CSV: a header row, then one row per record, newline line ends, an empty cell for None; written
whole and atomically (``write_csv``) or row by row as the rows are made (``appending_csv``).
Markdown: a header, a ``| --- |`` rule and one line per row, each cell already text (``escape``
keeps a ``|`` or a line break inside a cell from ending it).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cifarlab.files import write_atomic


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> str:
    """The table as CSV text; a row that is a mapping gives its values in ``header``'s order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(c) for c in header] if isinstance(row, Mapping) else row)
    return buffer.getvalue()


def write_csv(
    path: Path, header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]]
) -> None:
    """Writes ``csv_text`` to ``path`` atomically (a reader sees the old table or the new one)."""
    text = csv_text(header, rows)
    write_atomic(path, lambda tmp: tmp.write_text(text))


@contextlib.contextmanager
def appending_csv(
    path: Path, header: Sequence[str]
) -> Iterator[Callable[[Iterable[Sequence[Any]]], None]]:
    """A CSV table written as its rows are made: ``path`` gets the header, and each call of the
    function this yields appends rows and puts them on disk (flushed and synced), so a crash or
    Ctrl-C keeps every row appended before it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)

        def append(rows: Iterable[Sequence[Any]]) -> None:
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())

        yield append


def escape(text: Any) -> str:
    """A value as the text of one markdown cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table of cells already turned into text, ending in a line break."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"
