"""Parameter counts worked out by hand, for the tests of every model."""

import torch


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
