"""Muon for conv filters, Nesterov SGD for the rest: optimizer=muon and the fastnet recipes."""

from pathlib import Path

import pytest
import torch
from torch import nn

from cifarlab.models.fastnet import FastNet
from cifarlab.run.jobs import train
from cifarlab.training.muon import MuonSGD, orthogonalize
from cifarlab.training.optimizers import param_groups

from .conftest import compose_config, quick_overrides

MUON = {
    "name": "muon",
    "lr": 0.1,
    "momentum": 0.85,
    "nesterov": True,
    "weight_decay": 0.01,
    "norm_lr_mult": 4.0,
    "bias_lr_mult": 2.0,
    "muon_lr": 0.24,
    "muon_momentum": 0.6,
}


@pytest.mark.parametrize("shape", [(16, 72), (72, 16)])
def test_orthogonalize_keeps_directions_and_evens_out_singular_values(shape) -> None:
    gen = torch.Generator().manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=gen))
    matrix = u @ torch.diag(torch.logspace(0, 1, k)) @ v.T  # singular values 1 to 10
    result = orthogonalize(matrix)
    singular = torch.linalg.svdvals(result)
    assert singular.min() > 0.5 and singular.max() < 1.3
    # result = U f(S) V^T with f > 0 for matrix = U S V^T: result^T matrix = V f(S) S V^T is
    # symmetric positive semi-definite
    product = (result.T @ matrix).double()
    assert torch.allclose(product, product.T, atol=1e-3 * product.abs().max())
    assert torch.linalg.eigvalsh(product).min() > -1e-3 * product.abs().max()


def test_param_groups_give_muon_the_trainable_conv_filters_only() -> None:
    net = FastNet(num_classes=3, width=4)
    groups = param_groups(net, MUON)
    weights, norms, filters, whiten_bias = groups  # fastnet's only other bias is the whitening's
    assert filters["muon"] and (filters["lr"], filters["momentum"]) == (0.24, 0.6)
    assert len(filters["params"]) == 6 and all(p.ndim == 4 for p in filters["params"])
    assert not any(p is net.whiten.weight for p in filters["params"])  # frozen: stays SGD's
    assert any(p is net.head.weight for p in weights["params"])
    assert whiten_bias["params"] == [net.whiten.bias] and whiten_bias["lr"] == pytest.approx(0.2)
    assert norms["lr"] == pytest.approx(0.4)
    assert whiten_bias["lr"] * whiten_bias["weight_decay"] == pytest.approx(0.1 * 0.01)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert len(param_groups(net, {**MUON, "name": "sgd"})) == 3


def test_sgd_groups_step_exactly_as_torch_sgd() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    twin = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    twin.load_state_dict(net.state_dict())
    ours = MuonSGD(net.parameters(), lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.01)
    theirs = torch.optim.SGD(
        twin.parameters(), lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.01
    )
    x = torch.randn(8, 5)
    for _ in range(3):
        for model, optimizer in ((net, ours), (twin, theirs)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_muon_group_renormalizes_the_filters_then_steps_along_the_orthogonalized_update() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3)
    start = conv.weight.detach().clone()
    optimizer = MuonSGD([{"params": [conv.weight], "muon": True}], lr=0.24, momentum=0.6)
    conv(torch.randn(4, 3, 8, 8)).square().mean().backward()
    grad = conv.weight.grad.clone()
    optimizer.step()
    normalized = start * (8**0.5 / start.norm())
    nesterov = grad + 0.6 * grad  # first step: the buffer is the gradient
    expected = normalized - 0.24 * orthogonalize(nesterov.reshape(8, -1)).view_as(start)
    assert torch.allclose(conv.weight, expected, atol=1e-6)
    assert not torch.allclose(conv.weight, start - 0.24 * grad, atol=1e-3)


def test_fastnet_recipe_trains_end_to_end_with_muon(folder_root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "train",
        [
            "experiment=fastnet",
            *quick_overrides(folder_root, tmp_path),
            "model.width=4",
            "data.val_size=0",
            "trainer.max_epochs=2",
        ],
    )
    assert cfg.optimizer.name == "muon"
    metrics = train(cfg)
    assert metrics["status"] == "completed"
    state = torch.load(metrics["last_ckpt"], weights_only=True)["state_dict"]
    for name in ("groups.0.conv1.weight", "groups.2.conv2.weight"):
        filters = state[f"net.{name}"]
        # renormalized before each step, then one step of at most lr x a unit-scale update
        assert filters.norm() == pytest.approx(len(filters) ** 0.5, rel=0.5)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and "test/acc_no_tta" in metrics
