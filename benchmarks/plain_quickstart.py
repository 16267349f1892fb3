"""The quick start's work in a plain PyTorch script, for benchmarks/bench_quickstart.py to hold
``train.py model=lenet trainer.max_epochs=2`` against.

    python benchmarks/plain_quickstart.py TRAIN_CACHE TEST_CACHE

The two arguments are cifarlab's cache files of decoded images (``cifarlab.data.cache_path``;
bench_quickstart.py builds them and passes them). The work is the quick start's: cifarlab's LeNet;
AdamW (lr 3e-3, weight decay 5e-4) with the linear one-cycle schedule (25% warm-up), stepped every
batch; 45,000 training images (5,000 held out for validation, as ``data.val_size``), shuffled,
normalized with CIFAR-10's mean and std, in batches of 128 (the last partial one dropped); 2
epochs with a validation pass (batches of 1,000) after each; the test of the weights with the best
validation accuracy; the per-class table, worst class first. Nothing from cifarlab but the network.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.models.lenet import LeNet

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
EPOCHS, BATCH_SIZE, EVAL_BATCH_SIZE, VAL_SIZE = 2, 128, 1000, 5000
LR, WEIGHT_DECAY, PCT_START = 3e-3, 5e-4, 0.25


def normalized(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


@torch.no_grad()
def evaluate(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Predicted labels of ``images``, in evaluation batches."""
    net.eval()
    predictions = [net(normalized(batch)).argmax(dim=1) for batch in images.split(EVAL_BATCH_SIZE)]
    return torch.cat(predictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_cache")
    parser.add_argument("test_cache")
    args = parser.parse_args()
    torch.manual_seed(42)
    train = torch.load(args.train_cache, weights_only=True)
    test = torch.load(args.test_cache, weights_only=True)
    classes = list(train["classes"])
    order = torch.randperm(len(train["labels"]), generator=torch.Generator().manual_seed(0))
    fit, held_out = order[:-VAL_SIZE], order[-VAL_SIZE:]
    images, labels = train["images"][fit], train["labels"][fit]
    val_images, val_labels = train["images"][held_out], train["labels"][held_out]

    net = LeNet(num_classes=len(classes))
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = len(labels) // BATCH_SIZE
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=LR,
        total_steps=EPOCHS * steps,
        pct_start=PCT_START,
        anneal_strategy="linear",
        cycle_momentum=False,
    )
    best_acc, best_state = -1.0, None
    for epoch in range(EPOCHS):
        net.train()
        total_loss = 0.0
        for idx in torch.randperm(len(labels)).split(BATCH_SIZE)[:steps]:
            loss = F.cross_entropy(net(normalized(images[idx])), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item()
        val_acc = (evaluate(net, val_images) == val_labels).float().mean().item()
        print(f"epoch {epoch}: train loss {total_loss / steps:.3f}, val acc {val_acc:.3f}")
        if val_acc > best_acc:
            best_acc, best_state = val_acc, copy.deepcopy(net.state_dict())

    assert best_state is not None
    net.load_state_dict(best_state)
    right = evaluate(net, test["images"]) == test["labels"]
    per_class = {
        name: right[test["labels"] == label].float().mean().item()
        for label, name in enumerate(classes)
    }
    print(f"\nlenet test accuracy ({EPOCHS} epochs)\n{'class':<12} accuracy %")
    for name, acc in sorted(per_class.items(), key=lambda item: item[1]):
        print(f"{name:<12} {100 * acc:10.1f}")
    print(f"{'overall':<12} {100 * right.float().mean().item():10.2f}")


if __name__ == "__main__":
    main()
