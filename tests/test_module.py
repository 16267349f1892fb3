"""ClassifierModule: the training loss, and compiling the network once in each process that
runs it."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from cifarlab.module import ClassifierModule


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
