"""One LightningModule for every model: loss, optimizer, schedule and the metrics we report."""

from __future__ import annotations

import functools
import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassStatScores

from cifarlab.accelerators import check_speed_options
from cifarlab.batch_aug import BatchAugment
from cifarlab.checks import check_optimizer
from cifarlab.errors import CifarlabError
from cifarlab.models import build_model
from cifarlab.muon import MuonSGD

SCHEDULERS = ("none", "onecycle", "cosine", "triangular")
TTA_MODES = ("none", "flip", "flip_translate")
NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


def param_groups(net: nn.Module, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The net's parameters in up to four groups: weights, biases, normalization layers, and (for
    ``optimizer=muon``) conv filters.

    ``norm_lr_mult`` multiplies the learning rate of normalization-layer parameters (airbench gives
    BatchNorm biases 64x), ``bias_lr_mult`` that of the other biases; their weight decay is divided
    by the same factor, so that the decay per step (lr x weight_decay, in SGD and AdamW alike)
    stays that of the other weights. ``no_decay_norm_bias`` takes weight decay off biases and
    normalization layers. Under Muon, trainable 4D weights (conv filters) form their own group
    with ``muon_lr`` and ``muon_momentum``.
    """
    lr, wd = cfg["lr"], cfg.get("weight_decay", 0.0)
    norm_mult, bias_mult = cfg.get("norm_lr_mult", 1.0), cfg.get("bias_lr_mult", 1.0)
    no_decay = bool(cfg.get("no_decay_norm_bias", False))
    muon = cfg.get("name") == "muon"
    weights: list[nn.Parameter] = []
    filters: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    norms: list[nn.Parameter] = []
    for module in net.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, NORM_LAYERS):
                norms.append(param)
            elif name == "bias":
                biases.append(param)
            elif muon and param.ndim == 4 and param.requires_grad:
                filters.append(param)
            else:
                weights.append(param)
    groups = [
        {"params": weights, "lr": lr, "weight_decay": wd},
        {
            "params": biases,
            "lr": lr * bias_mult,
            "weight_decay": 0.0 if no_decay else wd / bias_mult,
        },
        {
            "params": norms,
            "lr": lr * norm_mult,
            "weight_decay": 0.0 if no_decay else wd / norm_mult,
        },
    ]
    if filters:
        groups.append(
            {
                "params": filters,
                "lr": cfg["muon_lr"],
                "momentum": cfg["muon_momentum"],
                "weight_decay": 0.0,
                "muon": True,
            }
        )
    return [group for group in groups if group["params"]]


def build_optimizer(net: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    check_optimizer(cfg)
    name, lr = cfg["name"], cfg["lr"]
    params = param_groups(net, cfg)
    if name in ("sgd", "muon"):
        optimizer_class = MuonSGD if name == "muon" else torch.optim.SGD
        return optimizer_class(
            params,
            lr=lr,
            momentum=cfg.get("momentum", 0.0),
            nesterov=cfg.get("nesterov", False),
        )
    return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))))


def lr_factor(name: str, cfg: dict[str, Any], step: int, total: int) -> float:
    """The learning rate at ``step`` of ``total`` as a fraction of optimizer.lr.

    ``cosine``: linear warm-up from 0 over ``warmup_pct`` of the steps, then cosine decay to 0.
    ``triangular`` (airbench): linear from ``start`` to 1 at ``peak_pct``, then linear to ``end``.
    """
    t = min(step, total) / max(total, 1)
    if name == "cosine":
        warmup = cfg.get("warmup_pct", 0.0)
        if t < warmup:
            return (step + 1) / (warmup * total)
        return 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (1.0 - warmup)))
    peak, start, end = cfg.get("peak_pct", 0.23), cfg.get("start", 0.2), cfg.get("end", 0.07)
    if t < peak:
        return start + (1.0 - start) * t / peak
    return 1.0 + (end - 1.0) * (t - peak) / (1.0 - peak)


def tta_logits(net: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Logits averaged over views of ``x``: ``flip`` = the image and its mirror; ``flip_translate``
    (airbench's level 2) = half that, plus a quarter each for the image shifted one pixel up-left
    and one pixel down-right (reflect padding), each with its mirror."""

    def mirrored(images: torch.Tensor) -> torch.Tensor:
        return 0.5 * (net(images) + net(images.flip(-1)))

    logits = mirrored(x)
    if mode == "flip_translate":
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :h, :w], padded[..., 2 : h + 2, 2 : w + 2]]
        logits = 0.5 * logits + 0.25 * (mirrored(shifted[0]) + mirrored(shifted[1]))
    return logits


class ClassifierModule(L.LightningModule):
    """Trains any registered model with cross-entropy and logs per-class accuracy.

    Every constructor argument is a plain container (str, number, list, dict), so the checkpoint
    carries all it takes to rebuild the model and loads with ``torch.load(weights_only=True)``.
    ``model.compile`` and ``data.channels_last`` change how the network runs, never its state_dict,
    so checkpoints load the same with or without them.
    """

    def __init__(
        self,
        model: dict[str, Any],
        class_names: list[str],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        tta: str = "none",
        batch_aug: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.label_smoothing = (loss or {}).get("label_smoothing", 0.0)
        if not isinstance(self.label_smoothing, (int, float)) or not 0 <= self.label_smoothing < 1:
            raise CifarlabError(
                f"loss.label_smoothing={self.label_smoothing!r} must be a number in [0, 1), "
                "e.g. 0.1 (airbench uses 0.2)."
            )
        if tta not in TTA_MODES:
            raise CifarlabError(
                f"tta={tta!r} is not known; use one of {', '.join(TTA_MODES)} (flip_translate = "
                "mirror plus one-pixel shifts, as airbench)."
            )
        self.tta = tta
        model_options = {k: v for k, v in model.items() if k not in ("name", "width", "compile")}
        self.net = build_model(model["name"], len(class_names), model["width"], **model_options)
        self.compile_net = model.get("compile", False)
        # cutout/mixup/cutmix of training batches, seeded by the run's seed (kept in data's)
        self.batch_aug = BatchAugment.from_config(batch_aug, seed=(data or {}).get("seed", 0))
        check_speed_options(
            self.net,
            compile_net=self.compile_net,
            channels_last=(data or {}).get("channels_last", False),
        )
        n = len(class_names)
        # per training step these only add on the device: no NaN check or input validation, each
        # of which reads a value back and makes the step wait (DivergenceGuard watches the loss)
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.train_acc = MulticlassAccuracy(n, average="micro", validate_args=False)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_metrics = self._eval_metrics(n)
        self.test_metrics = self._eval_metrics(n)
        self.test_acc_no_tta = MulticlassAccuracy(n, average="micro")
        self.val_acc_best = MaxMetric()

    @staticmethod
    def _eval_metrics(num_classes: int) -> MetricCollection:
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                # per class (tp, fp, tn, fn, support): MulticlassAccuracy(average=None) says 0.0
                # for a class with no images, which must read as "none" instead
                "class_stats": MulticlassStatScores(num_classes, average=None),
            }
        )

    def configure_model(self) -> None:
        """Compiles the net (``model.compile``) in the process that runs it: ddp_spawn pickles the
        module into its workers, and pickling drops compilation. ``nn.Module.compile`` works in
        place, so unlike ``torch.compile(net)`` it adds no ``_orig_mod.`` prefix to the state_dict
        and a compiled run's checkpoint loads into a plain model (eval.py) and back."""
        if self.compile_net and self.net._compiled_call_impl is None:
            self.net.compile()

    def setup(self, stage: str) -> None:
        """Layers computed from data (fastnet's whitening) are set before fitting; a resumed run
        then loads its own values from the checkpoint over them."""
        if stage != "fit" or not hasattr(self.net, "init_whitening"):
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "normalized_train_images"):
            raise CifarlabError(
                f"model={self.hparams.model['name']} computes its first layer from training "
                "images: fit it with a cifarlab CIFAR10DataModule (as train.py does)."
            )
        self.net.init_whitening(datamodule.normalized_train_images(5000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_epoch_start(self) -> None:
        if hasattr(self.net, "set_epoch"):
            self.net.set_epoch(self.current_epoch)
        self.batch_aug.reseed(self.current_epoch, self.global_rank)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        x, targets = self.batch_aug(x, y)
        logits = self(x)
        loss = targets.loss(
            logits, functools.partial(F.cross_entropy, label_smoothing=self.label_smoothing)
        )
        # the weight is made on the device: a Python number would be copied there, which waits
        self.train_loss.update(loss.detach(), torch.full_like(loss.detach(), len(y)))
        self.train_acc.update(logits.detach(), targets.dominant)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss.compute(), sync_dist=True)
        self.log("train/acc", self.train_acc.compute(), sync_dist=True)
        # for run.py: the count survives ddp_spawn/ddp_fork, which return only callback_metrics
        self.log("train/epochs", float(self.current_epoch + 1), logger=False, sync_dist=True)
        self.train_loss.reset()
        self.train_acc.reset()

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        """Updates the stage's metrics; returns the logits for callbacks (confusion matrix).

        With ``tta`` on, the test metrics score the averaged views and ``test/acc_no_tta`` the
        plain forward pass; validation always uses the plain pass (it is cheaper)."""
        x, y = batch
        logits = self(x)
        if stage == "test" and self.tta != "none":
            self.test_acc_no_tta.update(logits, y)
            logits = tta_logits(self.net, x, self.tta)
        getattr(self, f"{stage}_loss").update(F.cross_entropy(logits, y), len(y))
        getattr(self, f"{stage}_metrics").update(logits, y)
        return logits

    def _log_eval(self, stage: str) -> dict[str, float]:
        loss = getattr(self, f"{stage}_loss")
        metrics = getattr(self, f"{stage}_metrics")
        values = metrics.compute()
        correct, support = values["class_stats"][:, 0], values["class_stats"][:, 4]
        acc_class = correct.float() / support.clamp(min=1)
        present = (support > 0).tolist()  # synchronized counts: every rank logs the same keys
        scalars = {
            f"{stage}/loss": loss.compute(),
            f"{stage}/acc": values["acc"],
            **{
                f"{stage}/acc_class/{name}": acc_class[i]
                for i, name in enumerate(self.class_names)
                if present[i]  # a class with no images here has no accuracy to log
            },
        }
        # torchmetrics has already synchronized these across DDP processes; sync_dist=True keeps
        # Lightning's check quiet and averages identical values
        self.log_dict(scalars, sync_dist=True)
        loss.reset()
        metrics.reset()
        return scalars

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        scalars = self._log_eval("val")
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(scalars["val/acc"])
            self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # torchmetrics keep their state out of state_dict; a resumed run needs the best so far
        checkpoint["val_acc_best"] = self.val_acc_best.max_value.detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_acc_best.update(checkpoint["val_acc_best"])

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
        if self.tta != "none":
            self.log("test/acc_no_tta", self.test_acc_no_tta.compute(), sync_dist=True)
            self.test_acc_no_tta.reset()

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.net, self.hparams.optimizer)
        cfg = self.hparams.scheduler or {"name": "none"}
        name = cfg.get("name", "none")
        if name not in SCHEDULERS:
            raise CifarlabError(
                f"scheduler={name!r} is not known; choose one of {', '.join(SCHEDULERS)}."
            )
        if name == "none":
            return optimizer
        if name == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=[group["lr"] for group in optimizer.param_groups],
                total_steps=int(self.trainer.estimated_stepping_batches),
                pct_start=cfg.get("pct_start", 0.25),
                anneal_strategy="linear",
                cycle_momentum=False,
            )
        else:
            total = int(self.trainer.estimated_stepping_batches)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: lr_factor(name, cfg, step, total)
            )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
