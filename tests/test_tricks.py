"""Training tricks: each config key changes what it says it changes, and nothing else."""

import itertools
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab import run
from cifarlab.ema import WeightEMA
from cifarlab.module import ClassifierModule, lr_factor, param_groups, tta_logits
from cifarlab.run import train

from .conftest import compose_config, quick_overrides


def module(**kwargs) -> ClassifierModule:
    defaults = {
        "model": {"name": "bn_cnn", "width": 4},
        "class_names": ["a", "b", "c"],
        "optimizer": {"name": "sgd", "lr": 0.1},
    }
    return ClassifierModule(**{**defaults, **kwargs})


def test_label_smoothing_changes_the_training_loss_only() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))
    plain, smoothed = module(), module(loss={"label_smoothing": 0.2})
    smoothed.load_state_dict(plain.state_dict())
    plain.eval(), smoothed.eval()
    with torch.no_grad():
        logits = plain(x)
        plain_loss = float(plain.training_step((x, y), 0))
        smoothed_loss = float(smoothed.training_step((x, y), 0))
    assert plain_loss == pytest.approx(float(F.cross_entropy(logits, y)))
    expected = float(F.cross_entropy(logits, y, label_smoothing=0.2))
    assert smoothed_loss == pytest.approx(expected)
    assert expected != pytest.approx(plain_loss)


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


class RecordingNet(nn.Module):
    """Returns a fixed linear function of each view and remembers the views it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.views: list[torch.Tensor] = []
        self.weight = torch.randn(3 * 4 * 4, 2, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.views.append(x.clone())
        return x.flatten(1) @ self.weight


def test_tta_averages_the_stated_views() -> None:
    x = torch.randn(2, 3, 4, 4)
    net = RecordingNet()
    flip = tta_logits(net, x, "flip")
    assert torch.allclose(flip, 0.5 * (net.forward(x) + net.forward(x.flip(-1))), atol=1e-6)
    net.views.clear()
    both = tta_logits(net, x, "flip_translate")
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :4, :4], padded[..., 2:, 2:]
    expected_views = [x, x.flip(-1), up_left, up_left.flip(-1), down_right, down_right.flip(-1)]
    assert len(net.views) == 6
    for seen, expected in zip(net.views, expected_views, strict=True):
        assert torch.equal(seen, expected)
    logits = [v.flatten(1) @ net.weight for v in expected_views]
    manual = 0.25 * (logits[0] + logits[1]) + 0.125 * sum(logits[2:])
    assert torch.allclose(both, manual, atol=1e-5)


def test_tta_reports_accuracy_with_and_without(folder_root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "train",
        [*quick_overrides(folder_root, tmp_path), "model=lenet", "tta=flip_translate"],
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc_no_tta"] <= 1.0 and 0.0 <= metrics["test/acc"] <= 1.0


class WeightsAtTest(L.Callback):
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


def test_ema_weights_differ_from_the_raw_ones_and_are_the_ones_tested(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = WeightsAtTest()
    original = run._instantiate_all
    monkeypatch.setattr(  # the callbacks group gets our recorder, the logger group stays as it is
        run,
        "_instantiate_all",
        lambda group: [*original(group), *([seen] if "model_checkpoint" in group else [])],
    )
    cfg = compose_config(
        "train",
        [*quick_overrides(folder_root, tmp_path), "model=bn_cnn", "model.width=4", "ema.decay=0.9"],
    )
    metrics = train(cfg)
    ckpt = torch.load(metrics["best_ckpt"], weights_only=True)
    average = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    raw = {k[4:]: v for k, v in ckpt["current_model_state"].items() if k.startswith("net.")}
    assert any(not torch.equal(average[k], raw[k]) for k in average)
    for name, tested in seen.seen.items():
        assert torch.equal(tested, average[name]), name


def test_ema_decay_ramps_and_lookahead_copies_the_average_back() -> None:
    ema = WeightEMA(decay=0.8, every_n_steps=5, ramp_power=3, lookahead=True)
    ema.total_steps = 100
    assert not ema.should_update(step_idx=3)
    assert ema.should_update(step_idx=49)
    assert ema._step_decay == pytest.approx(0.8 * 0.5**3)
    average, current = torch.zeros(3), torch.ones(3)
    assert torch.allclose(ema._average(average, current, torch.tensor(1)), torch.full((3,), 0.9))
    count = torch.tensor(7)
    assert ema._average(torch.tensor(2), count, torch.tensor(1)) is count
    with pytest.raises(Exception, match="ema.decay"):
        WeightEMA(decay=1.0)
    assert math.isclose(0.95**5, 0.7738, abs_tol=1e-4)
