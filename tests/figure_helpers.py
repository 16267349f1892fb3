"""Ten predictions of four classes and their confusion counted by hand, for the tests of the
figures and of the callbacks that draw them."""

import torch


def hand_counts(targets: list[int], predictions: list[int], n: int) -> torch.Tensor:
    counts = torch.zeros(n, n, dtype=torch.long)
    for t, p in zip(targets, predictions, strict=True):
        counts[t, p] += 1
    return counts


TARGETS = [0, 0, 0, 0, 2, 2, 2, 2, 2, 1]
PREDICTIONS = [0, 0, 0, 2, 2, 0, 2, 1, 2, 1]

# the image tags every train.py run writes to TensorBoard (its default callbacks)
RUN_IMAGE_TAGS = {
    "train/samples",
    "val/confusion_matrix",
    "val/per_class_accuracy",
    "test/confusion_matrix",
    "test/per_class_accuracy",
    "test/predictions",
}
