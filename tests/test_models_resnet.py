"""The CIFAR ResNet (cifarlab.models.resnet): the usual ResNet-18/34 sizes, stages and depths."""

import pytest
import torch

from cifarlab.models import build_model

from .model_helpers import n_params, resnet_params


def test_reference_sizes() -> None:
    # the usual CIFAR ResNet-18 and ResNet-34 (e.g. github.com/kuangliu/pytorch-cifar)
    assert n_params(build_model("resnet", 10, 64)) == 11_173_962
    assert n_params(build_model("resnet", 10, 64, depth=34)) == 21_282_122


@pytest.mark.parametrize("classes", [2, 10])
def test_resnet34_shape_and_blocks(classes: int) -> None:
    model = build_model("resnet", classes, 4, depth=34)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, classes)
    assert n_params(model) == resnet_params(4, classes, (3, 4, 6, 3))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 2 * 16 + 3  # stem, two per block, one shortcut per new stage
    assert [m.out_channels for m in convs][-1] == 32  # the last stage has 8 x width channels


def test_resnet_keeps_32x32_until_the_first_stage_and_halves_three_times() -> None:
    model = build_model("resnet", 10, 4)
    sizes = []
    x = model.stem(torch.randn(1, 3, 32, 32))
    sizes.append(x.shape[1:])
    for block in model.stages:
        x = block(x)
        sizes.append(x.shape[1:])
    assert sizes[0] == (4, 32, 32)  # 3x3 stride-1 stem, no max-pool
    assert sorted(set(sizes), key=lambda s: s[0]) == [
        (4, 32, 32),
        (8, 16, 16),
        (16, 8, 8),
        (32, 4, 4),
    ]
