"""Temperature scaling (Guo et al. 2017): one number T that divides the logits so the softmax
probabilities match how often the model is right. T is fitted on the validation split
(``eval.py calibrate=true``, cifarlab.callbacks.temperature), never on the test images it is judged
on, and stored beside the checkpoint (``<ckpt>.temperature.json``) so the checkpoint itself is
never rewritten; the test and predict.py read it from there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from cifarlab.errors import CifarlabError


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T > 0 that minimizes the NLL of ``logits / T``, by LBFGS on log T (so T stays
    positive without a constraint); the loss is convex in 1/T, so the minimum is the global one.

    Lightning's validate/test hooks run under ``torch.inference_mode``, whose tensors autograd
    refuses: the fit runs with gradients on, on copies made outside it."""
    with torch.inference_mode(False), torch.enable_grad():
        logits, targets = logits.detach().float().cpu().clone(), targets.cpu().clone()
        log_t = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), targets)
            loss.backward()
            return loss

        optimizer.step(closure)
        return float(log_t.detach().exp())


def temperature_path(ckpt_path: str | Path) -> Path:
    """Where a checkpoint's fitted temperature lives: beside it, never inside it."""
    return Path(f"{ckpt_path}.temperature.json")


def read_temperature(path: Path) -> float | None:
    """The temperature stored at ``path``; None when there is none. A damaged file is refused
    with what to do, not silently ignored."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())["temperature"]
    except (ValueError, KeyError, TypeError) as err:
        raise CifarlabError(
            f"{path} holds no temperature ({err}). Delete it, or fit it again with "
            "eval.py ckpt_path=<checkpoint> calibrate=true."
        ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise CifarlabError(
            f"{path}: temperature={value!r} must be a number > 0. Delete the file, or fit it "
            "again with eval.py ckpt_path=<checkpoint> calibrate=true."
        )
    if not math.isfinite(value):
        raise CifarlabError(f"{path}: temperature={value!r} is not finite. Delete the file.")
    return float(value)
