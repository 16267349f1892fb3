"""One LightningModule for every model: the loss, the training and evaluation steps, and the metrics
we report. The optimizer and schedule come from cifarlab.training.optimizers and .schedules,
test-time augmentation from cifarlab.training.tta."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassStatScores

from cifarlab.data.batch_aug import BatchAugment
from cifarlab.errors import CifarlabError
from cifarlab.internals import carry_optimizer_steps, saves_between_epochs
from cifarlab.models import build_from_config
from cifarlab.training.epoch_sums import EpochSums
from cifarlab.training.schedules import build_optimization, optimizer_steps_per_epoch
from cifarlab.training.tta import tta_logits


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
        self._criterion = functools.partial(F.cross_entropy, label_smoothing=self.label_smoothing)
        self.tta = tta
        self.net = build_from_config(
            model, len(class_names), image_size=(data or {}).get("image_size", 32)
        )
        self.compile_net = model.get("compile", False)
        self._net_compiled = False  # by configure_model, in this process (see __getstate__)
        # cutout/mixup/cutmix of training batches, seeded by the run's seed (kept in data's)
        self.batch_aug = BatchAugment.from_config(batch_aug, seed=(data or {}).get("seed", 0))
        if (data or {}).get("channels_last", False):
            # conv weights NHWC to match data.channels_last's batches (tensor cores prefer it;
            # mixing layouts costs a conversion per layer); the state_dict keys stay the same
            self.net.to(memory_format=torch.channels_last)
        n = len(class_names)
        # the epoch's sums reach these once, at its end; they synchronize the DDP processes
        self.train_sums = EpochSums()
        self.train_loss, self.train_acc = MeanMetric(), MeanMetric()
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
        and a compiled run's checkpoint loads into a plain model (eval.py) and back. Lightning
        calls this hook again for every ``trainer.test`` after ``fit``: the net is compiled once."""
        if self.compile_net and not self._net_compiled:
            self.net.compile()
            self._net_compiled = True

    def __getstate__(self) -> dict[str, Any]:
        """A pickled copy (ddp_spawn's workers) compiles again where it runs: ``nn.Module`` drops
        its compiled forward when pickled, so our record of it goes too."""
        return {**super().__getstate__(), "_net_compiled": False}

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

    def __setattr__(self, name: str, value: Any) -> None:
        """Lightning records the hook it is in as ``_current_fx_name`` around every hook it calls,
        about 50 times a training step. ``nn.Module.__setattr__`` checks every value it is given
        against parameters, buffers and submodules, several microseconds a time; a hook's name is
        none of them, so it is stored as a plain attribute, which is what that check ends in."""
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_epoch_start(self) -> None:
        self.batch_aug.reseed(self.current_epoch, self.global_rank)

    @property
    def automatic_optimization(self) -> bool:
        """Lightning's automatic optimization only for a trainer that clips or accumulates
        gradients (``trainer.gradient_clip_val``, ``trainer.accumulate_grad_batches``), which it
        does for us there, or whose checkpoints save every N steps or every time interval
        (``every_n_train_steps``, ``train_time_interval``), which Lightning's ModelCheckpoint
        does as documented only then (cifarlab.internals). Otherwise ``training_step`` takes the
        step itself (``optimize``): the same zero_grad, backward, optimizer step and schedule
        step in the same order, without the closure and hook calls around them, about 400 us of
        Python a step on a 2-core CPU (docs/benchmarks.md), more than a small network's whole
        step on a GPU."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer: no step to take
            return True
        return (
            bool(trainer.gradient_clip_val)
            or trainer.accumulate_grad_batches != 1
            or saves_between_epochs(trainer)
        )

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        raise AttributeError(
            "ClassifierModule chooses its optimization from its trainer's gradient clipping, "
            "accumulation and checkpoint callbacks; it cannot be set."
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        x, targets = self.batch_aug(x, y)
        logits = self(x)
        loss = targets.loss(logits, self._criterion)
        self.train_sums.add(loss.detach(), logits.detach(), targets.dominant)
        if not self.automatic_optimization:
            self.optimize(loss)
        return loss

    def optimize(self, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss`` as Lightning's automatic optimization takes it: the
        Lightning optimizer and ``manual_backward`` keep what the strategy and precision add
        (DDP's gradient averaging, mixed precision's loss scaling, callbacks' hooks)."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def train_epoch_metrics(self) -> dict[str, torch.Tensor]:
        """The mean training loss and accuracy of the epoch's images on every process; the next
        epoch starts its sums from zero."""
        sums = self.train_sums.take()
        if sums is not None:
            loss_sum, correct, images = sums
            # the weight is made on the device: a Python number would be copied there
            weight = torch.full_like(loss_sum, images)
            self.train_loss.update(loss_sum / weight, weight)
            self.train_acc.update(correct / weight, weight)
        metrics = {"train/loss": self.train_loss.compute(), "train/acc": self.train_acc.compute()}
        self.train_loss.reset()
        self.train_acc.reset()
        return metrics

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_epoch_metrics(), sync_dist=True)
        # for cifarlab.run.records: the count survives ddp_spawn/ddp_fork, which return only
        # callback_metrics
        self.log("train/epochs", float(self.current_epoch + 1), logger=False, sync_dist=True)

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
        carry_optimizer_steps(checkpoint, self.automatic_optimization)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
        if self.tta != "none":
            self.log("test/acc_no_tta", self.test_acc_no_tta.compute(), sync_dist=True)
            self.test_acc_no_tta.reset()

    def configure_optimizers(self) -> Any:
        return build_optimization(
            self.net,
            self.hparams.optimizer,
            self.hparams.scheduler,
            total_steps=lambda: int(self.trainer.estimated_stepping_batches),
            steps_per_epoch=lambda: optimizer_steps_per_epoch(self.trainer),
        )


# Lightning looks at training_step's signature at every step (does it take batch_idx?), and
# inspect rebuilds a function's signature from its code object each time unless the function
# carries one: about 10 microseconds a step, saved here once.
ClassifierModule.training_step.__signature__ = inspect.signature(  # type: ignore[attr-defined]
    ClassifierModule.training_step
)
