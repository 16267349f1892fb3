"""--help and a bad value answer before Lightning, torchmetrics, torchvision or torch load; --help
lists every key of the config it would run with what it takes and its doc (cifarlab.config)."""

import re
from pathlib import Path

from .conftest import run_script

HEAVY = {"lightning", "torchmetrics", "torchvision", "torch"}


def heavy_imports(stderr: str) -> set[str]:
    """The heavy packages among the modules Python's ``-X importtime`` report lists."""
    imported = (
        line.rsplit("|", 1)[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:")
    )
    return {name.split(".")[0] for name in imported} & HEAVY


def train_py(*args: str, tmp_path: Path):
    """train.py run with Python's import report (``-X importtime``: every module imported, on
    stderr), which shows what it loaded however it ended."""
    return run_script(
        "train.py",
        *args,
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=300,
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )


def test_bad_lr_is_reported_without_heavy_imports(tmp_path: Path) -> None:
    result = train_py("optimizer.lr=-1", tmp_path=tmp_path)
    assert result.returncode == 2 and heavy_imports(result.stderr) == set(), result.stderr[-3000:]
    assert "optimizer.lr=-1 must be a number > 0" in result.stderr


def test_help_lists_every_key_of_the_chosen_options_without_heavy_imports(tmp_path: Path) -> None:
    result = train_py("--help", "model=resnet", tmp_path=tmp_path)
    assert heavy_imports(result.stderr) == set(), result.stderr[-3000:]
    listed = {line.split()[0]: line for line in result.stdout.splitlines() if " = " in line}
    assert re.search(r"= 0\.003 +a number > 0: learning rate", listed["optimizer.lr"])
    assert re.search(r"= 18 +one of 18, 34: ", listed["model.depth"])
    assert "hardware.keep_freed_host_memory" in listed and "data.root" in listed
    assert "model.dropout" not in listed  # bn_cnn's, not resnet's


def test_a_width_the_model_cannot_take_is_reported_without_heavy_imports(tmp_path: Path) -> None:
    result = train_py("model=bn_cnn", "model.width=7", tmp_path=tmp_path)
    assert result.returncode == 2 and heavy_imports(result.stderr) == set(), result.stderr[-3000:]
    assert "does not fit bn_cnn" in result.stderr
