"""LeNet (cifarlab.models.lenet): the PyTorch tutorial's net, and its 'wider' exercise."""

import torch

from cifarlab.models import build_model

from .model_helpers import n_params


def test_reference_size() -> None:
    assert n_params(build_model("lenet", 10, 6)) == 62006  # the tutorial's net


def test_width_is_the_first_convs_channels() -> None:
    net = build_model("lenet", 10, 12)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 12), (12, 16)]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
