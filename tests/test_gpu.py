"""On a CUDA GPU: a training epoch, end to end, never waits for the device.

Marked ``gpu`` (``uv run pytest -m gpu``; benchmarks/gpu_check.py runs them, and runs
tests/gpu_steps.py's check directly where pytest is missing); skipped without CUDA.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .gpu_steps import CASES, check_no_host_sync

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("case", CASES)
def test_a_training_epoch_makes_no_host_sync(folder_root: Path, tmp_path: Path, case: str) -> None:
    check_no_host_sync(folder_root, tmp_path, CASES[case])
