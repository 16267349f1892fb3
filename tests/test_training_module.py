"""ClassifierModule: the training loss, and compiling the network once in each process that
runs it."""

from __future__ import annotations

import pickle
from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from cifarlab.training.module import ClassifierModule


def module(**kwargs) -> ClassifierModule:
    defaults = {
        "model": {"name": "bn_cnn", "width": 4},
        "class_names": ["a", "b", "c"],
        "optimizer": {"name": "sgd", "lr": 0.1},
    }
    return ClassifierModule(**{**defaults, **kwargs})


def bare_trainer(root: Path, **kwargs) -> L.Trainer:
    """A CPU Trainer without logger, bar, summary or validation, and without checkpoints unless
    ``kwargs`` ask for them."""
    bare = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "default_root_dir": root,
    }
    return L.Trainer(**{**bare, **kwargs})


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


def test_the_net_is_compiled_once_per_process_and_again_in_a_pickled_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lightning calls configure_model for fit and again for every test; ddp_spawn pickles the
    module into its workers, where it must compile again (pickling drops compilation)."""
    compiled: list[object] = []

    def recording_compile(function, *args, **kwargs):
        compiled.append(function)
        return function

    monkeypatch.setattr(torch, "compile", recording_compile)  # nn.Module.compile calls it
    args = {"class_names": ["a", "b"], "optimizer": {"name": "sgd", "lr": 0.1}}
    module = ClassifierModule(model={"name": "lenet", "width": 2, "compile": True}, **args)
    assert compiled == []  # not at construction: in the process that runs it
    module.configure_model()
    module.configure_model()
    assert len(compiled) == 1
    copy = pickle.loads(pickle.dumps(module))
    copy.configure_model()
    copy.configure_model()
    assert len(compiled) == 2
    plain = ClassifierModule(model={"name": "lenet", "width": 2}, **args)
    plain.configure_model()
    assert len(compiled) == 2


class StepRecord(L.Callback):
    """Each training step's mean loss, correct predictions and images, as the step saw them."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, int, int]] = []
        self.correct = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with torch.no_grad():  # the weights before the step's update: those the step used
            self.correct = int((pl_module(batch[0]).argmax(dim=1) == batch[1]).sum())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append((float(outputs["loss"]), self.correct, len(batch[1])))


def test_training_loss_and_accuracy_are_means_over_the_epochs_images(tmp_path) -> None:
    """Batches of 4 and 1 image: the last image counts a fifth, not half."""
    torch.manual_seed(0)
    x, y = torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1])
    record = StepRecord()
    trainer = bare_trainer(tmp_path, max_epochs=1, callbacks=[record])
    net = module(model={"name": "fc512", "width": 8}, optimizer={"name": "sgd", "lr": 0.5})
    trainer.fit(net, DataLoader(TensorDataset(x, y), batch_size=4))
    assert [images for *_, images in record.steps] == [4, 1]
    loss = sum(loss * images for loss, _, images in record.steps) / 5
    accuracy = sum(correct for _, correct, _ in record.steps) / 5
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(loss, rel=1e-5)
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(accuracy)


def fitted(root: Path, epochs: int = 2, ckpt_path: Path | None = None, **trainer_kwargs):
    """A small fc512 fitted with AdamW and the one-cycle schedule on 24 random images, 3 steps
    an epoch: the module and its trainer."""
    torch.manual_seed(0)
    x, y = torch.randn(24, 3, 32, 32), torch.randint(0, 3, (24,))
    net = module(
        model={"name": "fc512", "width": 8},
        optimizer={"name": "adamw", "lr": 3e-3},
        scheduler={"name": "onecycle"},
    )
    trainer = bare_trainer(root, max_epochs=epochs, **trainer_kwargs)
    trainer.fit(net, DataLoader(TensorDataset(x, y), batch_size=8), ckpt_path=ckpt_path)
    return net, trainer


def test_the_module_takes_lightnings_automatic_step_itself(tmp_path: Path) -> None:
    """Without gradient clipping or accumulation the module steps its optimizer and schedule in
    training_step; a clip that never clips hands the step to Lightning and changes nothing."""
    own, own_trainer = fitted(tmp_path / "own")
    automatic, automatic_trainer = fitted(tmp_path / "automatic", gradient_clip_val=1e9)
    assert not own.automatic_optimization and automatic.automatic_optimization
    assert own_trainer.global_step == automatic_trainer.global_step == 6
    assert own.lr_schedulers().last_epoch == automatic.lr_schedulers().last_epoch == 6
    for name, weights in own.state_dict().items():
        assert torch.equal(weights, automatic.state_dict()[name]), name


def test_a_checkpoint_of_the_other_optimization_mode_resumes_at_its_step(tmp_path: Path) -> None:
    _, automatic_trainer = fitted(tmp_path, epochs=1, gradient_clip_val=1e9)
    ckpt = tmp_path / "automatic.ckpt"
    automatic_trainer.save_checkpoint(ckpt)
    own, own_trainer = fitted(tmp_path, epochs=2, ckpt_path=ckpt)
    assert not own.automatic_optimization
    assert own_trainer.global_step == own.lr_schedulers().last_epoch == 6


@pytest.mark.parametrize(
    "saving", [{"every_n_train_steps": 1}, {"train_time_interval": timedelta(0)}], ids=str
)
def test_checkpoints_by_steps_or_time_are_saved_within_the_epoch(
    tmp_path: Path, saving: dict[str, object]
) -> None:
    """Lightning's ModelCheckpoint saves by steps or time as documented only when Lightning takes
    the step (cifarlab.internals): such a callback hands the step to Lightning."""
    checkpoints = tmp_path / "checkpoints"
    saver = ModelCheckpoint(dirpath=checkpoints, filename="{step}", save_top_k=-1, **saving)
    net, _ = fitted(tmp_path, epochs=1, enable_checkpointing=True, callbacks=[saver])
    assert net.automatic_optimization
    assert {"step=1.ckpt", "step=2.ckpt"} <= {path.name for path in checkpoints.iterdir()}
