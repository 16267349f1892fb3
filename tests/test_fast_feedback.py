"""--help and a bad value answer before Lightning, torchmetrics, torchvision or torch load; --help
lists every key of the config it would run with what it takes and its doc (cifarlab.config)."""

import re
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
    assert "optimizer.lr=-1 must be a number > 0" in result.stderr


def test_help_lists_every_key_of_the_chosen_options_without_heavy_imports(tmp_path: Path) -> None:
    result = probe("--help", "model=resnet", tmp_path=tmp_path)
    assert "heavy: []" in result.stdout
    listed = {line.split()[0]: line for line in result.stdout.splitlines() if " = " in line}
    assert re.search(r"= 0\.003 +a number > 0: learning rate", listed["optimizer.lr"])
    assert re.search(r"= 18 +one of 18, 34: ", listed["model.depth"])
    assert "hardware.keep_freed_host_memory" in listed and "data.root" in listed
    assert "model.dropout" not in listed  # bn_cnn's, not resnet's


def test_a_width_the_model_cannot_take_is_reported_without_heavy_imports(tmp_path: Path) -> None:
    result = probe("model=bn_cnn", "model.width=7", tmp_path=tmp_path)
    assert "exit 2" in result.stdout and "heavy: []" in result.stdout, result.stdout
    assert "does not fit bn_cnn" in result.stderr
