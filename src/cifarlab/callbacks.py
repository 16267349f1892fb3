"""What a run shows in TensorBoard beyond Lightning's scalars: figures, image grids, hparams.

Each piece is a Lightning callback listed in conf/callbacks/default.yaml, so a run can switch one
off (``callbacks.image_grids=null``). They write only through the run's TensorBoardLogger and do
nothing without one. Everything is written by global rank 0, after metrics are reduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.tensorboard.summary import hparams as hparams_summary

from cifarlab.data import NORMALIZATIONS
from cifarlab.sweep import job_name, swept_keys
from cifarlab.utils import in_multirun

# the final metrics every run reports in the HParams tab (values come from the logged scalars)
HPARAMS_METRICS = ("val/acc_best", "test/acc", "val/acc", "test/loss")
# each HParams column and the config keys (overrides) that set it
HPARAMS_KEYS = {
    "model": ("model", "model.name"),
    "width": ("model.width",),
    "optimizer": ("optimizer", "optimizer.name"),
    "lr": ("optimizer.lr",),
    "weight_decay": ("optimizer.weight_decay",),
    "scheduler": ("scheduler", "scheduler.name"),
    "batch_size": ("data.batch_size",),
    "max_epochs": ("trainer.max_epochs",),
    "augment": ("data.augment",),
    "seed": ("seed",),
    "classes": ("data.classes",),
}


def tensorboard_logger(
    save_dir: str, name: str = "tensorboard", **kwargs: Any
) -> TensorBoardLogger:
    """Lightning's TensorBoardLogger whose run folder, in a multirun, is named by the overrides.

    ``tensorboard --logdir <sweep dir>`` then lists
    ``0/tensorboard/model.width=32,optimizer.lr=0.01`` instead of ``0/tensorboard``; a single run
    keeps ``<run dir>/tensorboard/``.
    """
    kwargs.setdefault("version", job_name())
    kwargs.setdefault("default_hp_metric", False)
    return TensorBoardLogger(save_dir=save_dir, name=name, **kwargs)


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    if not trainer.is_global_zero:
        return None
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _unnormalize(images: torch.Tensor, normalize: str) -> torch.Tensor:
    """Normalized float batch -> [0, 1] images in (N, H, W, 3) order, as people look at them."""
    mean, std = (
        torch.tensor(v, device=images.device).view(1, 3, 1, 1) for v in NORMALIZATIONS[normalize]
    )
    return (images.float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def confusion_figure(matrix: torch.Tensor, class_names: Sequence[str], title: str) -> Any:
    """Row-normalized confusion matrix (rows: true class), each cell annotated when it fits."""
    plt = _pyplot()
    counts = matrix.double()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(class_names)
    size = max(4.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), layout="constrained")
    shown = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                value = rates[i, j].item()
                color = "white" if value > 0.5 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    return fig


def per_class_figure(matrix: torch.Tensor, class_names: Sequence[str], title: str) -> Any:
    """Bar chart of per-class accuracy (the confusion matrix's normalized diagonal)."""
    plt = _pyplot()
    counts = matrix.double()
    support = counts.sum(dim=1)
    acc = (counts.diagonal() / support.clamp(min=1) * 100).tolist()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(class_names)), 3.2), layout="constrained")
    bars = ax.bar(list(class_names), acc, color="tab:blue")
    labels = [f"{a:.0f}" if n else "-" for a, n in zip(acc, support.tolist(), strict=True)]
    ax.bar_label(bars, labels=labels, fontsize=8)  # "-": no images of the class
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy %")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45)
    return fig


def image_grid_figure(
    images: torch.Tensor,
    class_names: Sequence[str],
    labels: torch.Tensor,
    predictions: torch.Tensor | None = None,
) -> Any:
    """A grid of (N, H, W, 3) images titled with their label, or with truth and prediction.

    With predictions, wrong ones get a red title and frame, right ones green, so errors stand out.
    """
    plt = _pyplot()
    n = len(images)
    cols = min(8, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        ax.imshow(images[k].numpy())
        truth = class_names[int(labels[k])]
        if predictions is None:
            ax.set_title(truth, fontsize=8)
            continue
        guess = class_names[int(predictions[k])]
        color = "tab:green" if guess == truth else "tab:red"
        ax.set_title(f"GT {truth}\nPred {guess}", fontsize=7, color=color)
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(2.5 if guess != truth else 1.0)
    fig.tight_layout()
    return fig


class ClassFigures(L.Callback):
    """Confusion matrix and per-class accuracy figures for validation and test.

    Validation figures are drawn every ``every_n_epochs`` epochs and at the last one, test figures
    once. It also writes TensorBoard's custom-scalars layout that puts all per-class curves of a
    split in one chart (Custom Scalars tab), next to train/val loss and accuracy overlaid.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = max(1, int(every_n_epochs))
        self._matrix: torch.Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = _tensorboard(trainer)
        if logger is None:
            return
        logger.experiment.add_custom_scalars(
            {
                "accuracy and loss": {
                    "accuracy (train, val)": ["Multiline", [r"^(train|val)/acc$"]],
                    "loss (train, val)": ["Multiline", [r"^(train|val)/loss$"]],
                },
                "per-class accuracy (one line per class)": {
                    "val": ["Multiline", [r"^val/acc_class/"]],
                    "test": ["Multiline", [r"^test/acc_class/"]],
                },
            }
        )

    def _reset(self, pl_module: L.LightningModule) -> None:
        n = len(pl_module.class_names)
        self._matrix = torch.zeros(n * n, dtype=torch.int64, device=pl_module.device)

    def _update(self, pl_module: L.LightningModule, logits: Any, batch: Any) -> None:
        if not isinstance(logits, torch.Tensor) or self._matrix is None:
            return
        n = len(pl_module.class_names)
        labels = batch[1]
        self._matrix += torch.bincount(labels * n + logits.argmax(dim=1), minlength=n * n)

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._matrix is None:
            return
        n = len(pl_module.class_names)
        matrix = trainer.strategy.reduce(self._matrix, reduce_op="sum").view(n, n).cpu()
        self._matrix = None
        logger = _tensorboard(trainer)
        if logger is None:
            return
        names = pl_module.class_names
        when = f"epoch {trainer.current_epoch}" if stage == "val" else "best checkpoint"
        writer, step = logger.experiment, trainer.global_step
        writer.add_figure(
            f"{stage}/confusion_matrix", confusion_figure(matrix, names, f"{stage} ({when})"), step
        )
        writer.add_figure(
            f"{stage}/per_class_accuracy",
            per_class_figure(matrix, names, f"{stage} accuracy per class ({when})"),
            step,
        )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        drawn = (epoch + 1) % self.every_n_epochs == 0 or last
        if drawn and not trainer.sanity_checking:
            self._reset(pl_module)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self._update(pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(pl_module)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self._update(pl_module, outputs, batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")


class ImageGrids(L.Callback):
    """Training images as the model sees them (augmented, then un-normalized) with their labels,
    logged once at the start of training, and test images of every class with ground truth and
    prediction (about ``num_images`` in all), logged at the end of testing.
    """

    def __init__(self, num_images: int = 32) -> None:
        self.num_images = num_images
        self._picked: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._counts: list[int] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        logger = _tensorboard(trainer)
        if logger is None or batch_idx != 0 or trainer.global_step != 0:
            return
        images, labels = batch[0][: self.num_images], batch[1][: self.num_images]
        shown = _unnormalize(images, pl_module.hparams.data.get("normalize", "cifar10"))
        fig = image_grid_figure(shown, pl_module.class_names, labels.cpu())
        logger.experiment.add_figure("train/samples", fig, 0)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._picked = []
        self._counts = [0] * len(pl_module.class_names)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keeps the first few test images of every class (test sets are often sorted by class,
        so the first batch alone would show one class only)."""
        if not isinstance(outputs, torch.Tensor) or not trainer.is_global_zero:
            return
        per_class = -(-self.num_images // len(self._counts))
        labels = batch[1]
        for label in labels.unique().tolist():
            wanted = per_class - self._counts[label]
            if wanted <= 0:
                continue
            idx = (labels == label).nonzero().flatten()[:wanted]
            self._picked.append((batch[0][idx], labels[idx], outputs[idx].argmax(dim=1)))
            self._counts[label] += len(idx)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = _tensorboard(trainer)
        if logger is None or not self._picked:
            return
        images, labels, predictions = (
            torch.cat(parts) for parts in zip(*self._picked, strict=True)
        )
        self._picked = []
        shown = _unnormalize(images, pl_module.hparams.data.get("normalize", "cifar10"))
        fig = image_grid_figure(shown, pl_module.class_names, labels.cpu(), predictions.cpu())
        logger.experiment.add_figure("test/predictions", fig, trainer.global_step)


class HParamsLogger(L.Callback):
    """Writes the run's hyperparameters to TensorBoard's HParams tab, against its final metrics.

    The metric values are the run's own logged scalars (``val/acc_best``, ``test/acc``), so no
    placeholder value is written. Every value has one fixed type (lr always a float, classes
    always a string, ...), so the columns of a sweep's runs line up. In a multirun the columns the
    sweep varies are marked as differing, which TensorBoard shows first and by default.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = _tensorboard(trainer)
        if logger is None:
            return
        params = run_hparams(dict(pl_module.hparams), trainer.max_epochs)
        experiment, start, end = hparams_summary(params, dict.fromkeys(HPARAMS_METRICS, 0.0))
        swept = swept_keys() if in_multirun() else set()
        mark_differing(experiment, {c for c, keys in HPARAMS_KEYS.items() if swept & set(keys)})
        writer = logger.experiment._get_file_writer()
        for summary in (experiment, start, end):
            writer.add_summary(summary)


def mark_differing(experiment: Summary, columns: set[str]) -> None:
    """Sets ``differs`` on the experiment's hparam columns named in ``columns``."""
    value = experiment.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in columns
    value.metadata.plugin_data.content = data.SerializeToString()


def run_hparams(hparams: dict[str, Any], max_epochs: int | None) -> dict[str, Any]:
    """The columns of the HParams table, each cast to its one type."""
    model, optimizer = hparams["model"], hparams["optimizer"]
    scheduler = hparams.get("scheduler") or {}
    data = hparams.get("data") or {}
    classes = data.get("classes")
    return {
        "model": str(model["name"]),
        "width": int(model["width"]),
        "optimizer": str(optimizer["name"]),
        "lr": float(optimizer["lr"]),
        "weight_decay": float(optimizer.get("weight_decay", 0.0)),
        "scheduler": str(scheduler.get("name", "none")),
        "batch_size": int(data.get("batch_size", 0)),
        "max_epochs": int(max_epochs if max_epochs is not None else -1),
        "augment": str(data.get("augment", "none")),
        "seed": int(data.get("seed", 0)),
        "classes": ",".join(classes) if classes else f"all {len(hparams['class_names'])}",
    }
