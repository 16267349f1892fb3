"""cifarlab.training.optimizers: parameter groups and the learning-rate schedules."""

import io
import itertools

import pytest
import torch
from torch import nn

from cifarlab.models.fastnet import FastNet
from cifarlab.training.optimizers import EARLY_EPOCHS, param_groups
from cifarlab.training.schedules import build_optimization, lr_factor

OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05},
    "adamw": {"name": "adamw", "lr": 0.01, "weight_decay": 0.05},
    "muon": {
        "name": "muon",
        "lr": 0.1,
        "momentum": 0.85,
        "nesterov": True,
        "weight_decay": 0.05,
        "muon_lr": 0.24,
        "muon_momentum": 0.6,
    },
}
SCHEDULES = {
    "none": {"name": "none"},
    "onecycle": {"name": "onecycle", "pct_start": 0.25},
    "cosine": {"name": "cosine", "warmup_pct": 0.1},
    "triangular": {"name": "triangular"},
}
STEPS_PER_EPOCH, BIAS_EPOCHS, TOTAL = 3, 2, 10  # the whitening bias's lr reaches 0 at step 6


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


@pytest.mark.parametrize(("total", "pct_start"), [(40, 0.25), (37, 0.3), (3, 0.0)])
def test_onecycle_factor_is_torch_onecyclelr_step_for_step(total: int, pct_start: float) -> None:
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=0.5,
        total_steps=total,
        pct_start=pct_start,
        anneal_strategy="linear",
        cycle_momentum=False,
    )
    cfg = {"pct_start": pct_start}
    for step in range(total):
        if step > 0:
            optimizer.step()
            reference.step()
        assert 0.5 * lr_factor("onecycle", cfg, step, total) == pytest.approx(
            optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-15
        ), step


def test_onecycle_whose_peak_is_the_first_step_starts_at_the_peak() -> None:
    """4 steps with pct_start 0.25 put the peak at step 0, where torch's OneCycleLR divides by
    zero; the schedule starts at the peak and falls from there."""
    factors = [lr_factor("onecycle", {"pct_start": 0.25}, step, 4) for step in range(4)]
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(1 / 25 / 1e4)
    assert all(a > b for a, b in itertools.pairwise(factors))


def whitening_bias_run(
    optimizer_name: str, schedule: str, steps: int, resume_at: int | None = None
) -> tuple[list[float], list[list[float]], list[torch.Tensor]]:
    """Trains a tiny fastnet ``steps`` optimizer steps as Lightning does (optimizer step, then
    scheduler step); returns each step's lrs of the whitening-bias group and of the others, and
    the bias after each step. ``resume_at``: saved there and continued in a fresh net, optimizer
    and scheduler that load the states, as a resumed run does."""

    def build(state: dict | None = None):
        torch.manual_seed(0)
        net = FastNet(num_classes=3, width=4, whiten_bias_epochs=BIAS_EPOCHS)
        net.init_whitening(torch.randn(20, 3, 32, 32))
        built = build_optimization(
            net,
            OPTIMIZERS[optimizer_name],
            SCHEDULES[schedule],
            total_steps=lambda: TOTAL,
            steps_per_epoch=lambda: STEPS_PER_EPOCH,
        )
        optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
        if state is not None:
            net.load_state_dict(state["net"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        return net, optimizer, scheduler

    net, optimizer, scheduler = build()
    early = [i for i, g in enumerate(optimizer.param_groups) if EARLY_EPOCHS in g]
    assert len(early) == 1 and optimizer.param_groups[early[0]]["params"] == [net.whiten.bias]
    gen = torch.Generator().manual_seed(1)
    images, labels = torch.randn(steps, 4, 3, 32, 32, generator=gen), torch.arange(4) % 3
    bias_lrs, other_lrs, biases = [], [], []
    for step in range(steps):
        if step == resume_at:
            state = {
                "net": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            }
            net, optimizer, scheduler = build(torch.load(saved(state), weights_only=True))
        groups = optimizer.param_groups
        bias_lrs.append(groups[early[0]]["lr"])
        other_lrs.append([g["lr"] for i, g in enumerate(groups) if i != early[0]])
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images[step]), labels).backward()
        assert net.whiten.bias.grad.abs().sum() > 0  # it has a gradient to step along
        optimizer.step()
        scheduler.step()
        biases.append(net.whiten.bias.detach().clone())
    return bias_lrs, other_lrs, biases


def saved(state: dict) -> io.BytesIO:
    """``state`` as torch.save writes it into a checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
def test_whitening_bias_lr_falls_linearly_to_zero_then_the_bias_stays(
    optimizer_name: str, schedule: str
) -> None:
    """The bias's lr is base x max(0, 1 - step / (epochs x steps per epoch)) under every
    optimizer and schedule, the other groups keep the schedule, and from the step where the lr
    is 0 on, the bias no longer changes (its gradient and weight decay notwithstanding)."""
    cfg = OPTIMIZERS[optimizer_name]
    bias_lrs, other_lrs, biases = whitening_bias_run(optimizer_name, schedule, TOTAL)
    decay_steps = BIAS_EPOCHS * STEPS_PER_EPOCH
    expected = [cfg["lr"] * max(0.0, 1 - step / decay_steps) for step in range(TOTAL)]
    assert bias_lrs == pytest.approx(expected, rel=1e-12, abs=0)
    weights_lr = [lrs[0] for lrs in other_lrs]  # the first group: the weights, at optimizer.lr
    factor = [lr_factor(schedule, SCHEDULES[schedule], step, TOTAL) for step in range(TOTAL)]
    assert weights_lr == pytest.approx([cfg["lr"] * f for f in factor], rel=1e-9)
    assert weights_lr[-1] > 0
    assert not torch.equal(biases[decay_steps - 2], biases[decay_steps - 1])  # last step at lr > 0
    for bias in biases[decay_steps:]:
        assert torch.equal(bias, biases[decay_steps - 1])


def test_bias_lr_mult_scales_the_whitening_bias_group() -> None:
    net = FastNet(num_classes=3, width=4, whiten_bias_epochs=BIAS_EPOCHS)
    groups = param_groups(net, {**OPTIMIZERS["sgd"], "bias_lr_mult": 64})
    (early,) = [g for g in groups if EARLY_EPOCHS in g]
    assert early["params"] == [net.whiten.bias] and early[EARLY_EPOCHS] == BIAS_EPOCHS
    assert early["lr"] == pytest.approx(6.4) and early["lr"] * early["weight_decay"] == 0.1 * 0.05
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


@pytest.mark.parametrize("schedule", ["onecycle", "none"])
def test_a_resumed_run_continues_the_whitening_bias_lr_where_it_was(schedule: str) -> None:
    whole = whitening_bias_run("muon", schedule, 9)
    resumed = whitening_bias_run("muon", schedule, 9, resume_at=STEPS_PER_EPOCH)  # after epoch 0
    assert resumed[0] == whole[0] and resumed[1] == whole[1]
    for a, b in zip(resumed[2], whole[2], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
