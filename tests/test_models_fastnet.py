"""The airbench-class network: its whitening layer comes from data, stays frozen, and whitens;
its bias trains early on, also under DDP."""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from cifarlab.data import CIFAR10DataModule
from cifarlab.models.fastnet import FastNet, whitening_filters
from cifarlab.run.jobs import train
from cifarlab.training.module import ClassifierModule
from cifarlab.training.optimizers import EARLY_EPOCHS

from .conftest import compose_config, quick_overrides


def patch_covariance(images: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    out = F.conv2d(images.double(), filters.double())  # (n, 24, h-1, w-1)
    flat = out.transpose(0, 1).reshape(len(filters), -1)
    return flat @ flat.T / flat.shape[1]


def test_whitening_filters_whiten_and_ignore_image_order() -> None:
    gen = torch.Generator().manual_seed(0)
    # correlated channels and neighbouring pixels, as in natural images
    base = torch.randn(200, 1, 33, 33, generator=gen)
    smooth = (base[..., 1:, 1:] + base[..., :-1, :-1]) / 2
    images = torch.cat([smooth, 0.5 * smooth + 0.1, smooth * 2], 1)
    images = images + 0.3 * torch.randn(images.shape, generator=gen)
    filters = whitening_filters(images, eps=0.0)
    assert filters.shape == (24, 3, 2, 2)
    assert torch.equal(filters[12:], -filters[:12])
    covariance = patch_covariance(images, filters[:12])  # uncentered, as the filters are
    # whitened outputs have (close to) identity covariance; the raw patches are far from it
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=2e-2)
    shuffled = whitening_filters(images[torch.randperm(200, generator=gen)], eps=0.0)
    assert torch.allclose(shuffled, filters, atol=1e-5)


def tiny_datamodule(root: Path) -> CIFAR10DataModule:
    datamodule = CIFAR10DataModule(source="folder", root=str(root), val_size=24, batch_size=16)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_fit_computes_the_whitening_from_training_images_and_keeps_it_frozen(
    folder_root: Path, tmp_path: Path
) -> None:
    cfg = compose_config(
        "train",
        [
            *quick_overrides(folder_root, tmp_path),
            "model=fastnet",
            "model.width=4",
            "model.whiten_bias_epochs=1",
            "trainer.max_epochs=2",
        ],
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed"
    state = torch.load(metrics["last_ckpt"], weights_only=True)["state_dict"]
    datamodule = tiny_datamodule(folder_root)
    expected = whitening_filters(datamodule.normalized_train_images(5000))
    assert torch.allclose(state["net.whiten.weight"], expected, atol=1e-6)
    assert bool(state["net.whitened"])


def test_ddp_run_across_the_whitening_bias_epochs_completes(
    folder_root: Path, tmp_path: Path
) -> None:
    """Under DDP every trainable parameter keeps its gradient for the whole run: the whitening
    bias stops changing through its learning rate (0 after ``whiten_bias_epochs``), not by
    leaving the graph, which DDP's gradient reduction would refuse."""
    cfg = compose_config(
        "train",
        [
            *quick_overrides(folder_root, tmp_path),
            "model=fastnet",
            "model.width=8",
            "model.whiten_bias_epochs=1",
            "trainer=ddp_cpu",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=4",
            "data.batch_size=32",
        ],
    )
    train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "completed" and saved["epochs"] == 3
    checkpoint = torch.load(saved["last_ckpt"], weights_only=True)
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    (bias_group,) = [g for g in groups if EARLY_EPOCHS in g]
    assert bias_group["lr"] == 0.0 and all(g["lr"] > 0 for g in groups if g is not bias_group)


def test_whitening_weight_never_trains() -> None:
    net = FastNet(num_classes=3, width=4, whiten_bias_epochs=2)
    net.init_whitening(torch.randn(50, 3, 32, 32))
    assert not net.whiten.weight.requires_grad and net.whiten.bias.requires_grad
    assert net.early_params() == ([net.whiten.bias], 2)


def test_untrained_fastnet_without_a_datamodule_is_refused(tmp_path: Path) -> None:
    module = ClassifierModule(
        model={"name": "fastnet", "width": 4},
        class_names=["a", "b"],
        optimizer={"name": "sgd", "lr": 0.1},
    )

    class NoData:
        datamodule = None

    module.trainer = NoData()  # what Lightning sets; the test needs only this attribute
    try:
        module.setup("fit")
    except Exception as err:
        assert "computes its first layer from training images" in str(err)
    else:
        raise AssertionError("setup should refuse to fit fastnet without training images")
