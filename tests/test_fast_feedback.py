"""--help and a bad value answer before Lightning, torchmetrics, torchvision or torch load."""

import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

PROBE = """
import runpy, sys
sys.argv = ["train.py", *sys.argv[1:]]
try:
    runpy.run_path("train.py", run_name="__main__")
except SystemExit as exit:
    print("exit", exit.code)
heavy = ("lightning", "torchmetrics", "torchvision", "torch")
print("heavy:", sorted(m for m in heavy if m in sys.modules))
"""


def probe(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bad_lr_is_reported_without_heavy_imports(tmp_path: Path) -> None:
    result = probe("optimizer.lr=-1", tmp_path=tmp_path)
    assert "exit 2" in result.stdout and "heavy: []" in result.stdout, result.stdout
    assert "optimizer.lr=-1 must be a positive number" in result.stderr


def test_help_needs_no_heavy_imports(tmp_path: Path) -> None:
    result = probe("--help", tmp_path=tmp_path)
    assert "heavy: []" in result.stdout and "optimizer" in result.stdout


def test_a_width_the_model_cannot_take_is_reported_without_heavy_imports(tmp_path: Path) -> None:
    result = probe("model=bn_cnn", "model.width=7", tmp_path=tmp_path)
    assert "exit 2" in result.stdout and "heavy: []" in result.stdout, result.stdout
    assert "does not fit bn_cnn" in result.stderr


def test_the_light_model_names_are_the_registry() -> None:
    from cifarlab.models import MODELS
    from cifarlab.run.checks import MODEL_NAMES

    assert sorted(MODEL_NAMES) == sorted(MODELS)
