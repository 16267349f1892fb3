"""The files ``input=`` names for predict.py: an image, a folder (a folder of ``<class>/<images>``
with the checkpoint's class names is scored), a glob or a list; each real file once, and what is
passed over said in one line."""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab.data.pictures import PICTURE_SUFFIXES, is_picture_name
from cifarlab.errors import CifarlabError

GLOB_CHARS = set("*?[")


@dataclass
class Item:
    """One file to predict, with its true class when it sits in a ``<class>/`` folder."""

    path: Path
    label: str | None = None


@dataclass
class Walk:
    """Files a folder walk or glob passed over, so that nothing is left out without a word.

    ``seen`` holds the (device, inode) of every file taken, so a file reached again through a
    link (or named twice) is predicted once.
    """

    seen: set[tuple[int, int]] = field(default_factory=set)
    hidden: int = 0
    not_pictures: Counter[str] = field(default_factory=Counter)
    repeated: int = 0

    def take(self, path: Path) -> bool:
        """Whether ``path`` is a file not taken before (a broken link is taken: its read fails
        with a reason)."""
        try:
            st = path.stat()
        except OSError:
            return True
        key = (st.st_dev, st.st_ino)
        if key in self.seen:
            self.repeated += 1
            return False
        self.seen.add(key)
        return True

    def note(self) -> str | None:
        """One line on what was passed over, or None when nothing was."""
        parts = []
        if self.hidden:
            parts.append(f"{self.hidden} hidden (names starting with '.', e.g. macOS's ._* files)")
        if self.not_pictures:
            kinds = ", ".join(sorted(self.not_pictures))
            count = sum(self.not_pictures.values())
            parts.append(f"{count} not named as a picture ({kinds})")
        if self.repeated:
            parts.append(f"{self.repeated} reached again through a link or a second name")
        if not parts:
            return None
        suffixes = " ".join(sorted(PICTURE_SUFFIXES))
        return f"skipped files: {'; '.join(parts)} (pictures are {suffixes})"


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_pictures(folder: Path, walk: Walk) -> list[Path]:
    """Picture files under ``folder``, sorted, each real file once.

    Links to folders are followed (a linked photo folder is part of the input), but every real
    folder is entered once, so a link back to a parent neither loops nor repeats its pictures.
    """
    found: list[Path] = []
    entered: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in entered:
            dirnames[:] = []
            continue
        entered.add((st.st_dev, st.st_ino))
        walk.hidden += sum(_is_hidden(d) for d in dirnames)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in filenames:
            if _is_hidden(name):
                walk.hidden += 1
            elif not is_picture_name(name):
                walk.not_pictures[Path(name).suffix.lower() or "no suffix"] += 1
            elif walk.take(Path(dirpath, name)):
                found.append(Path(dirpath, name))
    return sorted(found)


def _folder_items(folder: Path, class_names: Sequence[str], walk: Walk) -> list[Item]:
    """Scored when every subfolder is named after one of the checkpoint's classes (names
    compared in Unicode NFC, so "café" typed on macOS matches "café" typed elsewhere)."""
    by_nfc = {unicodedata.normalize("NFC", c): c for c in class_names}
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name)]
    top_pictures = [p for p in folder.iterdir() if p.is_file() and is_picture_name(p.name)]
    labels = {d: by_nfc.get(unicodedata.normalize("NFC", d.name)) for d in subdirs}
    if subdirs and not top_pictures and all(labels.values()):
        return [Item(p, labels[d]) for d in sorted(subdirs) for p in _walk_pictures(d, walk)]
    return [Item(p) for p in _walk_pictures(folder, walk)]


def _glob(spec: str, walk: Walk) -> list[Path]:
    """Files matching a glob, by pathlib's rules: ``**`` spans subfolders but does not descend
    into links to folders, so a link loop cannot multiply the matches."""
    parts = Path(spec).expanduser().parts
    first = next(i for i, part in enumerate(parts) if GLOB_CHARS & set(part))
    anchor = Path(*parts[:first]) if first else Path()
    files = []
    for path in sorted(anchor.glob(str(Path(*parts[first:])))):
        if any(_is_hidden(part) for part in path.relative_to(anchor).parts):
            walk.hidden += path.is_file()
        elif path.is_file() and walk.take(path):
            files.append(path)
    return files


def find_inputs(spec: Any, class_names: Sequence[str]) -> list[Item]:
    """Files named by ``input``: an image, a folder (searched recursively), a glob, or a list.

    Each real file is taken once; what a folder walk or glob passes over is said in one line.
    """
    specs = [spec] if isinstance(spec, str) else list(spec or [])
    if not specs or any(not isinstance(s, str) or not s.strip() for s in specs):
        raise CifarlabError(
            "predict.py needs something to predict: add input=PATH, where PATH is an image file, "
            "a folder of images (a folder of <class>/<images> is scored too) or a quoted glob "
            "such as input='photos/*.jpg'; a list works as well: input=[a.png,b.jpg]."
        )
    items: list[Item] = []
    walk = Walk()
    for s in specs:
        path = Path(s).expanduser()
        if path.is_dir():
            found = _folder_items(path, class_names, walk)
            if not found:
                raise CifarlabError(
                    f"input={s} is a folder without images: none of its files, subfolders "
                    f"included, ends in a picture suffix ({', '.join(sorted(PICTURE_SUFFIXES))}). "
                    "Point input at a folder that holds pictures, or name a file directly."
                )
            items += found
        elif path.is_file():
            if walk.take(path):
                items.append(Item(path))
        elif GLOB_CHARS & set(s):
            files = _glob(s, walk)
            if not files:
                raise CifarlabError(
                    f"input={s} matches no file. Check the pattern against the folder (a glob is "
                    "taken from the directory predict.py starts in; ** spans subfolders), and "
                    "quote it on the command line so the shell leaves it alone: input='dir/*.jpg'."
                )
            items += [Item(p) for p in files]
        else:
            raise CifarlabError(
                f"input={s} does not exist. Give an image file, a folder of images or a glob; "
                "relative paths are taken from the directory predict.py starts in."
            )
    note = walk.note()
    if note:
        print(note)
    return items
