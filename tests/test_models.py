import pytest
import torch

from cifarlab.errors import CifarlabError
from cifarlab.models import MODELS, build_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resnet_params(width: int, classes: int, blocks: tuple[int, ...]) -> int:
    """Convs without bias, 2 parameters per BN channel, 1x1 conv + BN shortcut at each new stage."""
    total = 27 * width + 2 * width  # stem
    channels = width
    for i, count in enumerate(blocks):
        out = width * 2**i
        for b in range(count):
            total += 9 * channels * out + 2 * out + 9 * out * out + 2 * out
            if b == 0 and i > 0:  # stride 2 and twice the channels: 1x1 conv + BN shortcut
                total += channels * out + 2 * out
            channels = out
    return total + channels * classes + classes


def expected_params(name: str, width: int, classes: int, batchnorm: bool = True) -> int:
    """Parameter counts worked out by hand from the architectures in the reference material."""
    if name == "resnet":
        return resnet_params(width, classes, (2, 2, 2, 2))
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
        + 2 * width * batchnorm
        + (9 * width * half + half)
        + 2 * half * batchnorm
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


@pytest.mark.parametrize(
    ("name", "width", "needle"),
    [
        ("resnet50", 8, "not known"),
        ("resnet", 0, "positive"),
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


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"depth": 50}, "model.depth=50"),
        ({"depth": True}, "model.depth=True"),
        ({"depth": "18"}, "model.depth='18'"),
    ],
)
def test_bad_resnet_depth_is_named(options: dict, needle: str) -> None:
    with pytest.raises(CifarlabError, match="18.*34") as info:
        build_model("resnet", 10, 8, **options)
    assert needle in str(info.value)


def test_bad_batchnorm_flag_is_named() -> None:
    with pytest.raises(CifarlabError, match="model.batchnorm='no'"):
        build_model("bn_cnn", 10, 8, batchnorm="no")
    with pytest.raises(CifarlabError, match="does not take"):
        build_model("lenet", 10, 6, batchnorm=False)
