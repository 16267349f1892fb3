"""export.py: the bare network as a state_dict, TorchScript or ONNX file, equal to PyTorch's."""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cifarlab.inference.export
from cifarlab.data import CIFAR10_CLASSES
from cifarlab.errors import CifarlabError
from cifarlab.inference.export import check_batch, export
from cifarlab.inference.trained import load_network
from cifarlab.models import build_model
from cifarlab.training.module import ClassifierModule

from .conftest import compose_config
from .os_helpers import file_size_limit, limit_file_size


class Net(nn.Module):
    """The PyTorch "Training a Classifier" tutorial's network, verbatim."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # flatten all dimensions except batch
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


def make_checkpoint(path: Path, model: str, width: int, classes=CIFAR10_CLASSES) -> Path:
    """A checkpoint as train.py writes it, with random weights and BatchNorm statistics."""
    torch.manual_seed(0)
    module = ClassifierModule(
        model={"name": model, "width": width, "compile": False},
        class_names=list(classes),
        optimizer={"name": "adamw", "lr": 0.001},
        data={"normalize": "cifar10"},
    )
    for name, buffer in module.net.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buffer.copy_(torch.rand_like(buffer) + 0.5)
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    torch.save(ckpt, path)
    return path


def run_export(ckpt: Path, fmt: str, tmp_path: Path, *extra: str) -> dict:
    return export(
        compose_config(
            "export", [f"ckpt_path={ckpt}", f"format={fmt}", f"paths.output_dir={tmp_path}", *extra]
        )
    )


def test_lenet_state_dict_runs_in_the_tutorials_own_code(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "last.ckpt", "lenet", 6)
    info = run_export(ckpt, "state_dict", tmp_path)
    PATH = info["path"]
    assert Path(PATH) == tmp_path / "last.pth"
    # the tutorial's test code, unchanged
    net = Net()
    net.load_state_dict(torch.load(PATH))
    images = check_batch()
    outputs = net(images)
    torch.testing.assert_close(outputs, load_network(str(ckpt), "test").net(images))
    sidecar = json.loads(Path(info["info_path"]).read_text())
    assert sidecar["class_names"] == list(CIFAR10_CLASSES)
    assert sidecar["normalize"]["mean"] == [0.4914, 0.4822, 0.4465]
    assert sidecar["input"]["shape"] == ["batch", 3, 32, 32]


@pytest.mark.parametrize(("model", "width"), [("fc512", 16), ("bn_cnn", 8)])
def test_other_models_state_dict_loads_into_their_class(
    tmp_path: Path, model: str, width: int
) -> None:
    ckpt = make_checkpoint(tmp_path / "m.ckpt", model, width, classes=("a", "b", "c"))
    info = run_export(ckpt, "state_dict", tmp_path, f"output={tmp_path / 'out' / 'net.pth'}")
    sidecar = json.loads(Path(info["info_path"]).read_text())
    options = {k: v for k, v in sidecar["model"].items() if k not in ("name", "width")}
    net = build_model(
        sidecar["model"]["name"], sidecar["num_classes"], sidecar["model"]["width"], **options
    )
    net.load_state_dict(torch.load(info["path"]))
    images = check_batch()
    torch.testing.assert_close(net.eval()(images), load_network(str(ckpt), "test").net(images))


@pytest.mark.parametrize("model", ["lenet", "bn_cnn"])
def test_torchscript_and_onnx_match_pytorch_at_any_batch_size(tmp_path: Path, model: str) -> None:
    ckpt = make_checkpoint(tmp_path / "m.ckpt", model, 8)
    reference = load_network(str(ckpt), "test").net
    scripted = torch.jit.load(run_export(ckpt, "torchscript", tmp_path)["path"])
    onnx_file = run_export(ckpt, "onnx", tmp_path)["path"]
    session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    for size in (1, 3, 17):
        images = check_batch(seed=size, size=size)
        with torch.inference_mode():
            expected = reference(images).numpy()
            np.testing.assert_allclose(scripted(images).numpy(), expected, atol=1e-4, rtol=0)
        (logits,) = session.run(None, {"images": images.numpy()})
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(CifarlabError, match="does not exist"):
        run_export(tmp_path / "x.ckpt", "onnx", tmp_path)


def test_onnx_without_its_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = make_checkpoint(tmp_path / "m.ckpt", "lenet", 6)
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # import raises ImportError
    with pytest.raises(CifarlabError, match=r"uv sync --extra onnx"):
        run_export(ckpt, "onnx", tmp_path)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    ("name", "fmt", "output"),
    [
        ("model.pth", "state_dict", None),  # the default output is <name>.pth
        ("best.pt", "torchscript", None),  # ... and <name>.pt
        ("m.ckpt", "state_dict", "m.ckpt"),  # output= the checkpoint itself
        ("m.ckpt", "torchscript", "hard_link.pt"),  # another name for the same file
        ("m.ckpt", "state_dict", "sym_link.pth"),
    ],
)
def test_export_never_writes_over_its_checkpoint(
    tmp_path: Path, name: str, fmt: str, output: str | None
) -> None:
    ckpt = make_checkpoint(tmp_path / name, "lenet", 6)
    if output == "hard_link.pt":
        os.link(ckpt, tmp_path / output)
    elif output == "sym_link.pth":
        os.symlink(ckpt, tmp_path / output)
    before = ckpt.read_bytes()
    extra = [f"output={tmp_path / output}"] if output else []
    for overwrite in ([], ["overwrite=true"]):  # not even when told to replace files
        with pytest.raises(CifarlabError, match="which is the checkpoint it reads"):
            run_export(ckpt, fmt, tmp_path, *extra, *overwrite)
        assert ckpt.read_bytes() == before
    assert not list(tmp_path.glob("*.json"))


def test_an_existing_export_or_sidecar_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m.ckpt", "lenet", 6)
    export_path, sidecar_path = tmp_path / "m.pth", tmp_path / "m.pth.json"
    export_path.write_bytes(b"an earlier export")
    with pytest.raises(CifarlabError, match=r"m\.pth, which already exists.*overwrite=true"):
        run_export(ckpt, "state_dict", tmp_path)
    assert export_path.read_bytes() == b"an earlier export" and not sidecar_path.exists()
    export_path.unlink()
    sidecar_path.write_text("{}")
    with pytest.raises(CifarlabError, match=r"m\.pth\.json, which already exists"):
        run_export(ckpt, "state_dict", tmp_path)
    assert not export_path.exists() and sidecar_path.read_text() == "{}"
    export_path.write_bytes(b"an earlier export")
    run_export(ckpt, "state_dict", tmp_path, "overwrite=true")
    assert set(torch.load(export_path)) >= {"conv1.weight", "fc3.bias"}
    assert json.loads(sidecar_path.read_text())["file"] == "m.pth"


def test_a_failed_check_keeps_the_file_it_would_have_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = make_checkpoint(tmp_path / "m.ckpt", "lenet", 6)
    (tmp_path / "m.pt").write_bytes(b"an earlier export")
    # no export can pass the check
    monkeypatch.setattr(cifarlab.inference.export, "TOLERANCE", -1.0)
    with pytest.raises(CifarlabError, match="so it was not kept"):
        run_export(ckpt, "torchscript", tmp_path, "overwrite=true")
    assert (tmp_path / "m.pt").read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "m.pt"]


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript", "onnx"])
def test_an_export_the_disk_refuses_names_the_path_and_the_reason(tmp_path: Path, fmt: str) -> None:
    ckpt = make_checkpoint(tmp_path / "lenet.ckpt", "lenet", 6)
    with file_size_limit(), pytest.raises(CifarlabError) as refused:
        limit_file_size(4096)  # far below LeNet's 250 kB of weights, as on a full disk
        run_export(ckpt, fmt, tmp_path)
    message = str(refused.value)
    assert str(tmp_path / "lenet") in message and "File too large" in message
    assert not list(tmp_path.glob(".*.tmp"))
