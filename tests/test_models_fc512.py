"""FC-512 (cifarlab.models.fc512): the reference's fully connected baseline."""

import torch

from cifarlab.models import build_model

from .model_helpers import n_params


def test_reference_size() -> None:
    assert n_params(build_model("fc512", 10, 512)) == 3072 * 512 + 512 + 5130


def test_one_tanh_hidden_layer_of_width_units_and_no_convolution() -> None:
    net = build_model("fc512", 2, 64)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3072, 64), (64, 2)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in net.modules()) == 1
    assert not any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
