"""cifarlab.training.ema: the average is what validation, checkpoints and the test use; decay ramp
and lookahead."""

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from cifarlab.internals import averaged_module, averaged_updates
from cifarlab.run import build
from cifarlab.run.jobs import train
from cifarlab.training.ema import WeightEMA

from .conftest import compose_config, quick_overrides


class WeightsAtTest(L.Callback):
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


def test_ema_weights_differ_from_the_raw_ones_and_are_the_ones_tested(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = WeightsAtTest()
    original = build.instantiate_all
    monkeypatch.setattr(  # the callbacks group gets our recorder, the logger group stays as it is
        build,
        "instantiate_all",
        lambda group, **overrides: [
            *original(group, **overrides),
            *([seen] if "model_checkpoint" in group else []),
        ],
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


def batchnorm_model() -> L.LightningModule:
    model = L.LightningModule()
    model.bn = torch.nn.BatchNorm1d(2)
    return model


def optimizer_step(
    ema: WeightEMA, model: L.LightningModule, global_step: int, weight: float, batches: int
) -> None:
    """The end of training batch ``global_step - 1``, with BatchNorm's weight and count set."""
    with torch.no_grad():
        model.bn.weight.fill_(weight)
        model.bn.num_batches_tracked.fill_(batches)
    trainer = SimpleNamespace(global_step=global_step)
    ema.on_train_batch_end(trainer, model, None, None, global_step - 1)  # type: ignore[arg-type]


def test_ema_decay_ramps_and_lookahead_copies_the_average_back() -> None:
    """Every 5th of 100 steps, decay 0.8 ramped by the progress cubed: at step 50 the average moves
    a 1 - 0.8 * 0.5**3 = 0.9 share towards the weights, which lookahead then set to it."""
    model = batchnorm_model()
    ema = WeightEMA(decay=0.8, every_n_steps=5, ramp_power=3, lookahead=True)
    ema.setup(SimpleNamespace(), model, "fit")  # type: ignore[arg-type]
    ema.total_steps = 100
    assert not ema.should_update(step_idx=3)
    assert ema.should_update(step_idx=49)
    optimizer_step(ema, model, 5, 1.0, 5)  # the first update: a copy
    optimizer_step(ema, model, 50, 11.0, 50)  # 0.1 * 1 + 0.9 * 11
    average = averaged_module(ema).bn.weight
    torch.testing.assert_close(average, torch.full((2,), 10.0))
    assert torch.equal(model.bn.weight, average)


def test_the_average_starts_at_the_weights_then_moves_by_the_ramped_decay() -> None:
    """Updates after the optimizer steps ``should_update`` picks: the first copies the weights,
    later ones move a ``1 - decay`` share towards them; counts (BatchNorm's batches) are copied."""
    model = batchnorm_model()
    ema = WeightEMA(decay=0.8, every_n_steps=2, ramp_power=1)
    ema.setup(SimpleNamespace(), model, "fit")  # type: ignore[arg-type]
    ema.total_steps = 4
    average = {name: t for name, t in averaged_module(ema).state_dict(keep_vars=True).items()}

    optimizer_step(ema, model, 1, 5.0, 1)  # not picked: every 2nd step
    assert torch.equal(average["bn.weight"], torch.ones(2))
    optimizer_step(ema, model, 2, 3.0, 2)  # the first update: a copy
    assert torch.equal(average["bn.weight"], torch.full((2,), 3.0))
    # the same optimizer step again (accumulated gradients): no update
    optimizer_step(ema, model, 2, 9.0, 2)
    assert torch.equal(average["bn.weight"], torch.full((2,), 3.0))
    optimizer_step(ema, model, 4, 7.0, 4)  # decay 0.8 * (4 / 4): 0.8 * 3 + 0.2 * 7
    torch.testing.assert_close(average["bn.weight"], torch.full((2,), 3.8))
    assert int(average["bn.num_batches_tracked"]) == 4
    assert int(averaged_updates(ema)) == 2


def test_lookahead_leaves_the_trained_weights_equal_to_the_average(
    folder_root: Path, tmp_path: Path
) -> None:
    """With lookahead the average is copied back after every update, the last one included."""
    cfg = compose_config(
        "train",
        [
            *quick_overrides(folder_root, tmp_path),
            "model=bn_cnn",
            "model.width=4",
            "ema.decay=0.9",
            "ema.lookahead=true",
        ],
    )
    ckpt = torch.load(train(cfg)["last_ckpt"], weights_only=True)
    average, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert average.keys() == raw.keys()
    assert all(torch.equal(average[k], raw[k]) for k in average)
