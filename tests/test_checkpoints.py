"""cifarlab.checkpoints: atomic writes, and checkpoints that would run code are refused unrun."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cifarlab.checkpoints import AtomicCheckpointIO
from cifarlab.errors import CifarlabError
from cifarlab.module import ClassifierModule
from cifarlab.run import evaluate, train

from .conftest import compose_config, run_script
from .test_run import eval_cfg


@pytest.fixture
def trained(trained_lenet: dict) -> Path:
    """The last.ckpt of a two-epoch LeNet run on the three-class folder data."""
    return Path(trained_lenet["last_ckpt"])


def test_a_failed_checkpoint_write_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2), "x": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


class RunsCode:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_unrun(trained: Path, tmp_path: Path) -> None:
    ckpt = torch.load(trained, weights_only=True)
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save(
        {**ckpt, "cifarlab_config": {**ckpt["cifarlab_config"], "x": RunsCode(marker)}}, evil
    )

    with pytest.raises(CifarlabError, match=f"ckpt_path={evil} is not a checkpoint"):
        evaluate(eval_cfg(evil, tmp_path / "eval"))
    with pytest.raises(CifarlabError, match=f"ckpt_path={evil} is not a checkpoint"):
        train(compose_config("train", [f"ckpt_path={evil}"]))
    assert not marker.exists() and not (tmp_path / "eval").exists()

    torch.load(evil, weights_only=False)  # the file is really dangerous without weights_only
    assert marker.exists()


def test_a_resumed_module_remembers_its_best_validation_accuracy(trained: Path) -> None:
    ckpt = torch.load(trained, weights_only=True)
    module = ClassifierModule(**ckpt["hyper_parameters"])
    module.on_load_checkpoint(ckpt)
    assert ckpt["val_acc_best"] > 0.5
    assert module.val_acc_best.compute() == ckpt["val_acc_best"]


@pytest.mark.slow
def test_eval_py_refuses_a_checkpoint_that_would_run_code(trained: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": RunsCode(marker), "hyper_parameters": {}}, evil)
    proc = run_script("eval.py", f"ckpt_path={evil}", f"hydra.run.dir={tmp_path}/e", cwd=tmp_path)
    assert proc.returncode == 2 and f"ckpt_path={evil}" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()
