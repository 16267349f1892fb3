import pytest
import torch

from cifarlab.errors import CifarlabError
from cifarlab.models import MODELS, build_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_params(name: str, width: int, classes: int) -> int:
    """Parameter counts worked out by hand from the architectures in the reference material."""
    if name == "lenet":
        return (
            (3 * width * 25 + width)
            + (width * 16 * 25 + 16)
            + (400 * 120 + 120)
            + (120 * 84 + 84)
            + (84 * classes + classes)
        )
    if name == "fc512":
        return (3072 * width + width) + (width * classes + classes)
    if name == "fastnet":
        groups = ((24, width), (width, 4 * width), (4 * width, 4 * width))
        return (
            (24 * 3 * 2 * 2 + 24)
            + sum(9 * cin * cout + 9 * cout * cout + 4 * cout for cin, cout in groups)
            + 4 * width * classes
        )
    half = width // 2
    return (
        (27 * width + width)
        + 2 * width
        + (9 * width * half + half)
        + 2 * half
        + (64 * half * 32 + 32)
        + (32 * classes + classes)
    )


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("width", [2, 8, 32])
@pytest.mark.parametrize("classes", [2, 10])
def test_output_shape_and_parameter_count(name: str, width: int, classes: int) -> None:
    model = build_model(name, classes, width)
    logits = model(torch.randn(5, 3, 32, 32))
    assert logits.shape == (5, classes)
    assert n_params(model) == expected_params(name, width, classes)


def test_reference_sizes() -> None:
    assert n_params(build_model("lenet", 10, 6)) == 62006  # the tutorial's net
    assert n_params(build_model("fc512", 10, 512)) == 3072 * 512 + 512 + 5130


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


@pytest.mark.parametrize(
    ("name", "width", "needle"),
    [
        ("resnet", 8, "not known"),
        ("lenet", 0, "positive"),
        ("fc512", -3, "positive"),
        ("bn_cnn", 7, "even"),
        ("bn_cnn", 1, "even"),
    ],
)
def test_bad_model_settings_are_named(name: str, width: int, needle: str) -> None:
    with pytest.raises(CifarlabError, match=needle) as info:
        build_model(name, 10, width)
    assert str(width) in str(info.value) or name in str(info.value)
