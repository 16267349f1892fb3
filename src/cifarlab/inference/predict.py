"""Predict the class of any picture with a trained checkpoint (the job behind predict.py).

Any size and mode Pillow reads is turned into what the network saw in training: RGB as
``cifarlab.data.pictures`` reads every picture (transparent pixels laid onto white, 16-bit and
float gray scaled), the centre square cut out and resized to 32x32, then normalized with the
checkpoint's own mean and std. A folder laid out as ``<class>/<images>``
with the checkpoint's class names is scored as eval.py scores the test split.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from PIL import Image
from rich.console import Console
from rich.table import Table

from cifarlab.data.pictures import READ_ERRORS, PictureError, load_picture, why_unreadable
from cifarlab.errors import CifarlabError
from cifarlab.files import write_json
from cifarlab.inference.calibration import read_temperature, temperature_path
from cifarlab.inference.inputs import Item, find_inputs
from cifarlab.inference.trained import Network, load_network
from cifarlab.models import INPUT_SIZE
from cifarlab.review.report import print_accuracy_table
from cifarlab.review.tables import appending_csv
from cifarlab.utils import to_plain_dict


def load_image(path: Path, size: int = INPUT_SIZE) -> torch.Tensor:
    """Any picture -> (3, size, size) uint8 RGB, converted as training folders are
    (``cifarlab.data.pictures.square_rgb``)."""
    return load_picture(path, size)


def _read(item: Item, size: int) -> tuple[torch.Tensor | None, str]:
    try:
        return load_image(item.path, size), ""
    except (PictureError, *READ_ERRORS) as err:
        return None, f"{item.path}: {why_unreadable(err)}"


def _batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_batches(
    network: Network,
    items: list[Item],
    device: torch.device,
    batch_size: int,
    top_k: int,
    temperature: float = 1.0,
) -> Iterator[tuple[list[dict[str, Any]], list[str]]]:
    """Per batch of files: rows (one per readable file, top-k classes with probabilities) and
    the errors of the files that could not be read. The logits are divided by ``temperature``
    (eval.py calibrate=true) before the softmax: the ranking stays, the probabilities change."""
    net = network.net.to(device)
    k = min(top_k, len(network.class_names))
    for chunk in _batches(items, batch_size):
        loaded = [(item, *_read(item, network.image_size)) for item in chunk]
        errors = [error for _, image, error in loaded if image is None]
        good = [(item, image) for item, image, _ in loaded if image is not None]
        rows: list[dict[str, Any]] = []
        if good:
            images = torch.stack([image for _, image in good]).to(device)
            with torch.inference_mode():
                logits = net(network.preprocess(images)).float() / temperature
                probs = logits.softmax(dim=1).cpu()
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
        yield rows, errors


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


def _csv_header(top_k: int) -> list[str]:
    return ["file", "label", "prediction", "probability", f"top{top_k}"]


def _csv_row(row: dict[str, Any]) -> list[Any]:
    others = "; ".join(f"{t['class']} {t['probability']:.4f}" for t in row["top"])
    return [row["file"], row["label"] or "", row["prediction"], row["probability"], others]


def predict_to_csv(
    network: Network,
    items: list[Item],
    cfg: DictConfig,
    device: torch.device,
    csv_path: Path,
    temperature: float = 1.0,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Predicts ``items`` batch by batch; each batch's rows are appended to ``csv_path`` and
    flushed to disk, and each unreadable file is named on stderr, as they come, so a crash or
    Ctrl-C keeps everything predicted before it."""
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    with appending_csv(csv_path, _csv_header(cfg.top_k)) as append, warnings.catch_warnings():
        # open_picture refuses what is over the limit with a reason; Pillow's warning repeats it
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for batch_rows, batch_errors in predict_batches(
            network, items, device, cfg.batch_size, cfg.top_k, temperature
        ):
            for error in batch_errors:
                print(f"error: {error}", file=sys.stderr)
            append([_csv_row(r) for r in batch_rows])
            rows += batch_rows
            errors += batch_errors
    return rows, errors


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
    network = load_network(cfg.get("ckpt_path"), purpose="predict.py")
    items = find_inputs(to_plain_dict(cfg).get("input"), network.class_names)
    device = pick_device(str(cfg.get("device", "auto")))
    output_dir = Path(cfg.paths.output_dir)
    sidecar = temperature_path(cfg.ckpt_path)
    temperature = read_temperature(sidecar)
    if temperature is not None:
        print(f"Probabilities calibrated with temperature {temperature:.4f} from {sidecar}")
    rows, errors = predict_to_csv(
        network, items, cfg, device, output_dir / "predictions.csv", temperature or 1.0
    )
    summary: dict[str, Any] = {
        "ckpt_path": str(cfg.ckpt_path),
        "temperature": temperature,
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
    write_json(output_dir / "predictions.json", summary)
    print(
        f"\n{len(rows)} of {len(items)} files predicted"
        + (f", {len(errors)} could not be read (listed above)" if errors else "")
        + f"; predictions.csv and predictions.json are in {output_dir}"
    )
    return summary
