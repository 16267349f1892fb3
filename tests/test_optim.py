"""cifarlab.optim: parameter groups and the learning-rate schedules."""

import itertools

import pytest
from torch import nn

from cifarlab.optim import lr_factor, param_groups


def test_param_groups_scale_norm_lr_and_keep_their_decay_per_step() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    groups = param_groups(net, {"lr": 0.1, "weight_decay": 0.01, "norm_lr_mult": 64})
    weights, biases, norms = groups
    assert [p.shape for p in weights["params"]] == [(4, 3, 3, 3), (2, 4)]
    assert [p.shape for p in biases["params"]] == [(4,), (2,)]
    assert len(norms["params"]) == 2  # BatchNorm weight and bias
    assert norms["lr"] == pytest.approx(6.4) and weights["lr"] == biases["lr"] == 0.1
    assert norms["lr"] * norms["weight_decay"] == pytest.approx(0.1 * 0.01)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    no_decay = param_groups(net, {"lr": 0.1, "weight_decay": 0.01, "no_decay_norm_bias": True})
    assert [g["weight_decay"] for g in no_decay] == [0.01, 0.0, 0.0]


def test_cosine_warm_up_rises_linearly_then_decays_to_zero() -> None:
    cfg, total = {"warmup_pct": 0.1}, 100
    factors = [lr_factor("cosine", cfg, step, total) for step in range(total + 1)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("cosine", {}, 50, 100) == pytest.approx(0.5)


def test_triangular_schedule_matches_airbench() -> None:
    cfg, total = {"start": 0.2, "peak_pct": 0.23, "end": 0.07}, 1000
    assert lr_factor("triangular", cfg, 0, total) == pytest.approx(0.2)
    assert lr_factor("triangular", cfg, 115, total) == pytest.approx(0.6)
    assert lr_factor("triangular", cfg, 230, total) == pytest.approx(1.0)
    assert lr_factor("triangular", cfg, 1000, total) == pytest.approx(0.07)
