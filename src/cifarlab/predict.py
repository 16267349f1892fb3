"""Predict the class of any picture with a trained checkpoint (the job behind predict.py).

Any size and mode PIL reads is turned into what the network saw in training: RGB (transparent
pixels laid onto white), the shorter side resized to 32 pixels, the centre 32x32 cut out, then
normalized with the checkpoint's own mean and std. A folder laid out as ``<class>/<images>``
with the checkpoint's class names is scored as eval.py scores the test split.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console
from rich.table import Table

from cifarlab.errors import CifarlabError
from cifarlab.models import INPUT_SIZE
from cifarlab.report import print_accuracy_table
from cifarlab.trained import Network, load_network
from cifarlab.utils import to_plain_dict, write_atomic, write_json

BACKGROUND = (255, 255, 255)  # what transparent pixels become
GLOB_CHARS = set("*?[")


@dataclass
class Item:
    """One file to predict, with its true class when it sits in a ``<class>/`` folder."""

    path: Path
    label: str | None = None


def image_suffixes() -> set[str]:
    """Every file extension PIL can open (.jpg, .png, .webp, .bmp, .gif, .tif, ...)."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _images_under(folder: Path) -> list[Path]:
    suffixes = image_suffixes()
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in suffixes
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _folder_items(folder: Path, class_names: Sequence[str]) -> list[Item]:
    """Scored when every subfolder is named after one of the checkpoint's classes."""
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    top_images = [
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in image_suffixes()
    ]
    scored = bool(subdirs) and not top_images and all(p.name in class_names for p in subdirs)
    if scored:
        return [Item(p, d.name) for d in sorted(subdirs) for p in _images_under(d)]
    return [Item(p) for p in _images_under(folder)]


def find_inputs(spec: Any, class_names: Sequence[str]) -> list[Item]:
    """Files named by ``input``: an image, a folder (searched recursively), a glob, or a list."""
    specs = [spec] if isinstance(spec, str) else list(spec or [])
    if not specs or any(not isinstance(s, str) or not s.strip() for s in specs):
        raise CifarlabError(
            "predict.py needs something to predict: add input=PATH, where PATH is an image file, "
            "a folder of images (a folder of <class>/<images> is scored too) or a quoted glob "
            "such as input='photos/*.jpg'; a list works as well: input=[a.png,b.jpg]."
        )
    items: list[Item] = []
    for s in specs:
        path = Path(s).expanduser()
        if path.is_dir():
            found = _folder_items(path, class_names)
            if not found:
                raise CifarlabError(
                    f"input={s} is a folder without images: none of its files, subfolders "
                    "included, ends in an image extension PIL reads (.jpg, .png, .webp, .bmp, "
                    ".gif, .tif, ...). Point input at a folder that holds pictures."
                )
            items += found
        elif path.is_file():
            items.append(Item(path))
        elif GLOB_CHARS & set(s):
            matched = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            files = [p for p in matched if p.is_file()]
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
    return items


def load_image(path: Path) -> torch.Tensor:
    """Any picture -> (3, 32, 32) uint8 RGB, the way the README describes it."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.has_transparency_data:
            background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        image = image.convert("RGB")
        scale = INPUT_SIZE / min(image.size)
        size = tuple(max(INPUT_SIZE, round(side * scale)) for side in image.size)
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - INPUT_SIZE) // 2, (size[1] - INPUT_SIZE) // 2
        image = image.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
        pixels = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def _read(item: Item) -> tuple[torch.Tensor | None, str]:
    try:
        return load_image(item.path), ""
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        reason = "not an image PIL can read" if isinstance(err, UnidentifiedImageError) else err
        return None, f"{item.path}: {reason}"


def _batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_items(
    network: Network, items: list[Item], device: torch.device, batch_size: int, top_k: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (one per readable file, top-k classes with probabilities) and per-file errors."""
    net = network.net.to(device)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    k = min(top_k, len(network.class_names))
    for chunk in _batches(items, batch_size):
        loaded = [(item, *_read(item)) for item in chunk]
        errors += [error for _, image, error in loaded if image is None]
        good = [(item, image) for item, image, _ in loaded if image is not None]
        if not good:
            continue
        images = torch.stack([image for _, image in good]).to(device)
        with torch.inference_mode():
            probs = net(network.preprocess(images)).float().softmax(dim=1).cpu()
        values, indices = probs.topk(k, dim=1)
        for (item, _), p, i in zip(good, values.tolist(), indices.tolist(), strict=True):
            top = [
                {"class": network.class_names[c], "probability": round(v, 6)}
                for v, c in zip(p, i, strict=True)
            ]
            rows.append(
                {
                    "file": str(item.path),
                    "label": item.label,
                    "prediction": top[0]["class"],
                    "probability": top[0]["probability"],
                    "top": top,
                }
            )
    return rows, errors


def accuracy(rows: list[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """Overall and per-class accuracy of rows that carry a true label (classes seen only)."""
    scored = [r for r in rows if r["label"] is not None]
    per_class = {}
    for name in class_names:
        of_class = [r for r in scored if r["label"] == name]
        if of_class:
            per_class[name] = sum(r["prediction"] == name for r in of_class) / len(of_class)
    correct = sum(r["prediction"] == r["label"] for r in scored)
    return {"acc": correct / len(scored), "acc_class": per_class, "images": len(scored)}


def _csv_text(rows: list[dict[str, Any]], top_k: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "label", "prediction", "probability", f"top{top_k}"])
    for r in rows:
        others = "; ".join(f"{t['class']} {t['probability']:.4f}" for t in r["top"])
        writer.writerow([r["file"], r["label"] or "", r["prediction"], r["probability"], others])
    return buffer.getvalue()


def _print_table(rows: list[dict[str, Any]], show: int) -> None:
    """Files are shown relative to the folder they all share, named in the table's title."""
    console = Console()
    common = Path(os.path.commonpath([Path(r["file"]).parent for r in rows]))
    table = Table(title=f"files in {common}", title_justify="left")
    table.add_column("file", overflow="fold")
    if any(r["label"] is not None for r in rows):
        table.add_column("label")
    table.add_column("prediction")
    table.add_column("prob", justify="right")
    table.add_column("next best")
    labelled = len(table.columns) == 5
    for r in rows[:show]:
        others = ", ".join(f"{t['class']} {t['probability']:.2f}" for t in r["top"][1:])
        name = str(Path(r["file"]).relative_to(common))
        cells = [name, r["label"] or ""] if labelled else [name]
        table.add_row(*cells, r["prediction"], f"{r['probability']:.3f}", others)
    console.print(table)
    if len(rows) > show:
        console.print(
            f"... and {len(rows) - show} more (all in predictions.csv; show=N prints more)"
        )


def pick_device(device: str) -> torch.device:
    """``auto`` is CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise CifarlabError(
            f"device={device!r} is not a device torch knows; use auto, cpu, cuda, cuda:1 or mps."
        ) from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise CifarlabError(f"device={device} needs a CUDA GPU, which this machine lacks; use cpu.")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise CifarlabError(
            f"device={device} needs Apple's MPS, which this machine lacks; use cpu."
        )
    return chosen


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predicts every file ``input`` names; returns the summary written to predictions.json."""
    for key in ("batch_size", "top_k"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CifarlabError(f"{key}={value!r} must be a positive whole number.")
    network = load_network(cfg.get("ckpt_path"), purpose="predict.py")
    items = find_inputs(to_plain_dict(cfg).get("input"), network.class_names)
    device = pick_device(str(cfg.get("device", "auto")))
    output_dir = Path(cfg.paths.output_dir)
    rows, errors = predict_items(network, items, device, cfg.batch_size, cfg.top_k)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    summary: dict[str, Any] = {
        "ckpt_path": str(cfg.ckpt_path),
        "model": network.model["name"],
        "class_names": network.class_names,
        "files": len(items),
        "predicted": len(rows),
        "failed": errors,
        "output_dir": str(output_dir),
    }
    if rows:
        _print_table(rows, int(cfg.get("show", 50)))
    if any(r["label"] is not None for r in rows):
        summary["accuracy"] = accuracy(rows, network.class_names)
        print_accuracy_table(
            f"{network.model['name']} accuracy on {summary['accuracy']['images']} images",
            summary["accuracy"]["acc"],
            summary["accuracy"]["acc_class"],
        )
    summary["predictions"] = rows
    write_atomic(
        output_dir / "predictions.csv", lambda tmp: tmp.write_text(_csv_text(rows, cfg.top_k))
    )
    write_json(output_dir / "predictions.json", summary)
    print(
        f"\n{len(rows)} of {len(items)} files predicted"
        + (f", {len(errors)} could not be read (listed above)" if errors else "")
        + f"; predictions.csv and predictions.json are in {output_dir}"
    )
    return summary
