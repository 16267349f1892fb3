"""The reference's small CNN (cifarlab.models.bn_cnn): with and without BatchNorm, dropout."""

import pytest
import torch

from cifarlab.errors import CifarlabError
from cifarlab.models import build_model

from .model_helpers import expected_params, n_params


@pytest.mark.parametrize("width", [2, 8])
@pytest.mark.parametrize("classes", [2, 10])
def test_bn_cnn_without_batchnorm(width: int, classes: int) -> None:
    model = build_model("bn_cnn", classes, width, batchnorm=False)
    assert model(torch.randn(5, 3, 32, 32)).shape == (5, classes)
    assert n_params(model) == expected_params("bn_cnn", width, classes, batchnorm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with_bn = build_model("bn_cnn", classes, width)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules()) == 2


def test_bn_cnn_dropout_is_applied_only_in_training() -> None:
    model = build_model("bn_cnn", 10, 16, dropout=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.equal(a, model(x))


def test_an_option_the_model_does_not_take_is_named() -> None:
    with pytest.raises(CifarlabError, match="does not take"):
        build_model("lenet", 10, 6, batchnorm=False)
