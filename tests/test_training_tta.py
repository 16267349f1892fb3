"""cifarlab.training.tta: which views test-time augmentation averages, and the accuracy with and
without."""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.run.jobs import train
from cifarlab.training.tta import tta_logits

from .conftest import compose_config, quick_overrides


class RecordingNet(nn.Module):
    """Returns a fixed linear function of each view and remembers the views it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.views: list[torch.Tensor] = []
        self.weight = torch.randn(3 * 4 * 4, 2, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.views.append(x.clone())
        return x.flatten(1) @ self.weight


def test_tta_averages_the_stated_views() -> None:
    x = torch.randn(2, 3, 4, 4)
    net = RecordingNet()
    flip = tta_logits(net, x, "flip")
    assert torch.allclose(flip, 0.5 * (net.forward(x) + net.forward(x.flip(-1))), atol=1e-6)
    net.views.clear()
    both = tta_logits(net, x, "flip_translate")
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :4, :4], padded[..., 2:, 2:]
    expected_views = [x, x.flip(-1), up_left, up_left.flip(-1), down_right, down_right.flip(-1)]
    assert len(net.views) == 6
    for seen, expected in zip(net.views, expected_views, strict=True):
        assert torch.equal(seen, expected)
    logits = [v.flatten(1) @ net.weight for v in expected_views]
    manual = 0.25 * (logits[0] + logits[1]) + 0.125 * sum(logits[2:])
    assert torch.allclose(both, manual, atol=1e-5)


def test_tta_reports_accuracy_with_and_without(folder_root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "train",
        [*quick_overrides(folder_root, tmp_path), "model=lenet", "tta=flip_translate"],
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc_no_tta"] <= 1.0 and 0.0 <= metrics["test/acc"] <= 1.0
