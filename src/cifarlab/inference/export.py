"""Export a checkpoint's bare network (no Lightning) for use elsewhere (the job behind export.py).

Three formats, each with a JSON sidecar (class names, normalization, input shape) beside it:

- ``state_dict``: a ``.pth`` that plain ``net.load_state_dict(torch.load(PATH))`` loads. LeNet's
  parameters get the names of the PyTorch "Training a Classifier" tutorial's ``Net`` (``conv1``,
  ``conv2``, ``fc1``, ``fc2``, ``fc3``) so the tutorial's own code runs on them; every other model
  keeps the names of its class in ``cifarlab.models``.
- ``torchscript``: a traced ``.pt`` for ``torch.jit.load`` (no cifarlab or Python class needed).
- ``onnx``: an ``.onnx`` file from torch's ``torch.export``-based exporter (the default since torch
  2.9; it needs ``onnxscript``), run back through onnxruntime as a check.

Both traced formats take any batch size, and the export itself checks that their outputs equal
PyTorch's on a batch of another size than the one they were traced with.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from cifarlab.errors import CifarlabError
from cifarlab.files import save_torch, write_atomic, write_json
from cifarlab.inference.trained import Network, load_network
from cifarlab.models import INPUT_SIZE

FORMATS = {"state_dict": ".pth", "torchscript": ".pt", "onnx": ".onnx"}
TOLERANCE = 1e-4  # largest |exported - PyTorch| accepted on the check batch
# cifarlab.models.LeNet's Sequential indices -> the tutorial Net's attribute names
LENET_TUTORIAL_NAMES = {
    "features.0": "conv1",
    "features.3": "conv2",
    "classifier.0": "fc1",
    "classifier.2": "fc2",
    "classifier.4": "fc3",
}
ONNX_EXTRA = (
    "format=onnx needs the onnx extra (onnx, onnxscript for torch's exporter, onnxruntime to "
    "check the file): uv sync --extra onnx (or pip install 'cifarlab[onnx]')."
)


def portable_state_dict(network: Network) -> dict[str, torch.Tensor]:
    """The net's weights as plain contiguous CPU tensors; LeNet's under the tutorial's names."""
    state = {k: v.detach().cpu().contiguous() for k, v in network.net.state_dict().items()}
    if network.model["name"] != "lenet":
        return state
    renamed = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        renamed[f"{LENET_TUTORIAL_NAMES[module]}.{param}"] = value
    return renamed


def check_batch(seed: int = 0, size: int = 5, image_size: int = INPUT_SIZE) -> torch.Tensor:
    """Normalized-looking random images; the size differs from the traced example's on purpose."""
    return torch.randn(
        size, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed)
    )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _export_torchscript(net: nn.Module, path: Path, batch: torch.Tensor) -> float:
    with warnings.catch_warnings():
        # torch 2.15 marks TorchScript deprecated (a FutureWarning per call); the README says so
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        traced = torch.jit.trace(net, batch[:2])
        with open(path, "wb") as f:  # a Python file keeps the system's reason for a failed write
            torch.jit.save(traced, f)
        loaded = torch.jit.load(str(path))
    with torch.inference_mode():
        return _max_diff(loaded(batch), net(batch))


def _export_onnx(net: nn.Module, path: Path, batch: torch.Tensor) -> float:
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx.export's default exporter imports it)
    except ImportError:
        raise CifarlabError(ONNX_EXTRA) from None
    for name in ("onnxscript", "onnx_ir"):  # their optimizer passes log every step at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.onnx.export(
        net,
        (batch[:2],),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        external_data=False,  # one self-contained file; these nets are far below 2 GB
        dynamo=True,
        verbose=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": batch.numpy()})
    with torch.inference_mode():
        return _max_diff(torch.from_numpy(logits), net(batch))


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same resolved path, or (hard links, bind mounts) the
    same device and inode."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_targets(ckpt: Path, targets: list[Path], overwrite: bool, suffix: str) -> None:
    """Refuses to write over the checkpoint (whatever ``overwrite`` says), onto a folder and,
    unless ``overwrite=true``, over any file that already exists (``suffix``: the format's, for
    the example name in a message)."""
    for target in targets:
        if _same_file(target, ckpt):
            raise CifarlabError(
                f"export.py would write {target}, which is the checkpoint it reads "
                f"(ckpt_path={ckpt}), and an export never replaces its input. Give the export "
                "another name with output=PATH (for example output=model_weights.pth), or "
                "another format= whose suffix differs from the checkpoint's."
            )
        if target.is_dir():
            raise CifarlabError(
                f"export.py would write {target}, which is a folder. Give output= the name of "
                f"the file to write, e.g. output={target / ckpt.stem}{suffix}."
            )
        if target.exists() and not overwrite:
            raise CifarlabError(
                f"export.py would write {target}, which already exists, and it does not replace "
                "files unless told to. Move or delete it, choose another output=PATH, or add "
                "overwrite=true to replace it."
            )


def sidecar(network: Network, fmt: str, path: Path, ckpt_path: str, diff: float | None) -> dict:
    """What a user of the exported file needs besides the weights."""
    options = {k: v for k, v in network.model.items() if k != "compile"}
    return {
        "format": fmt,
        "file": path.name,
        "checkpoint": str(ckpt_path),
        "model": options,
        "num_classes": len(network.class_names),
        "class_names": network.class_names,
        "normalize": {"name": network.normalize, "mean": network.mean, "std": network.std},
        "input": {
            "shape": ["batch", 3, network.image_size, network.image_size],
            "dtype": "float32",
            "layout": "NCHW, RGB, (pixel / 255 - mean) / std",
        },
        "output": "logits (N, num_classes); softmax gives probabilities",
        "max_abs_diff_vs_pytorch": diff,
        **(
            {"parameter_names": "the PyTorch tutorial's Net: conv1, conv2, fc1, fc2, fc3"}
            if fmt == "state_dict" and network.model["name"] == "lenet"
            else {}
        ),
    }


def export(cfg: DictConfig) -> dict[str, Any]:
    """Writes the network in ``format`` and its JSON sidecar; returns the sidecar."""
    fmt, overwrite = cfg.get("format"), cfg.get("overwrite", False)
    network = load_network(cfg.get("ckpt_path"), purpose="export.py")
    ckpt = Path(cfg.ckpt_path)
    path = Path(cfg.output) if cfg.get("output") else ckpt.with_suffix(FORMATS[fmt])
    info_path = path.with_name(path.name + ".json")
    check_targets(ckpt, [path, info_path], overwrite, FORMATS[fmt])
    batch = check_batch(image_size=network.image_size)
    net = network.net.float().cpu().eval()
    diffs: list[float] = []

    def write_checked(tmp: Path) -> None:
        """Writes the export to ``tmp`` and checks it there, so a failed check leaves whatever
        ``path`` held untouched."""
        if fmt == "state_dict":
            save_torch(portable_state_dict(network), tmp)
            return
        diff = (_export_torchscript if fmt == "torchscript" else _export_onnx)(net, tmp, batch)
        if not diff <= TOLERANCE:
            raise CifarlabError(
                f"The {fmt} export of {ckpt} differs from PyTorch by {diff:.2e} (> {TOLERANCE}) "
                "on a check batch, so it was not kept. This model may do something the exporter "
                "cannot follow; try format=state_dict."
            )
        diffs.append(diff)

    write_atomic(path, write_checked)
    diff = diffs[0] if diffs else None
    info = sidecar(network, fmt, path, str(ckpt), diff)
    write_json(info_path, info)
    checked = (
        f" (max |diff| vs PyTorch {diff:.1e}, batch of {len(batch)})" if diff is not None else ""
    )
    print(f"Wrote {path}{checked}\nWrote {info_path}")
    return {**info, "path": str(path), "info_path": str(info_path)}
