"""The keys of what a run learns: model, optimizer, scheduler, data and the training tricks.

The groups with options (``model=``, ``optimizer=``, ``scheduler=``) are unions told apart by
their ``name``, so each option declares exactly its own keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import Field, field_validator, model_validator

from cifarlab.config.schema import Section, key

# --- model=: one section per network (cifarlab.models) -----------------------------------------


class _Model(Section):
    name: str = key("the network")
    width: int = key("channels of the first layer; the net's other widths scale with it", ge=1)
    compile: bool = key("run the network through torch.compile (worth it on a GPU)")


class LeNet(_Model):
    """conv(3->width, 5x5) pool conv(width->16, 5x5) pool fc 400-120-84-classes (the tutorial)"""

    name: Literal["lenet"] = key("LeNet, the PyTorch tutorial's network (width 6)")


class FC512(_Model):
    """flatten 3072 -> width -> tanh -> classes"""

    name: Literal["fc512"] = key("one hidden tanh layer of width units (width 512)")


class BNCNN(_Model):
    """conv3x3(3->width) ReLU BN pool, conv3x3(width->width/2) ReLU BN pool, fc 32, fc classes"""

    name: Literal["bn_cnn"] = key("the reference's two-conv CNN with BatchNorm (width 16)")
    dropout: float = key("dropout before the 32-unit layer", ge=0, lt=1)
    batchnorm: bool = key("false = the reference's plain CNN (no BatchNorm layers)")

    @field_validator("width")
    @classmethod
    def _halves(cls, width: int) -> int:
        if width < 2 or width % 2:
            raise ValueError(
                "does not fit bn_cnn: its second conv has width/2 channels, so the width must be "
                "even and at least 2 (e.g. 16, 32, 64)"
            )
        return width


class ResNet(_Model):
    """conv3x3 stem, four stages of residual blocks (width, 2w, 4w, 8w), pool, linear"""

    name: Literal["resnet"] = key("CIFAR ResNet; width 64 and depth 18 = ResNet-18 (11.2M)")
    depth: Literal[18, 34] = key("18 (blocks 2-2-2-2) or 34 (3-4-6-3)")


class FastNet(_Model):
    """frozen 2x2 whitening conv, three conv groups (width, 4w, 4w), max-pool, scaled linear"""

    name: Literal["fastnet"] = key("airbench-class network (width 64 = airbench94)")
    bn_momentum: float = key("BatchNorm momentum: the new batch's weight", ge=0, le=1)
    head_scale: float = key("the linear head's output is multiplied by it (airbench: 1/9)", gt=0)
    whiten_bias_epochs: int = key("epochs over which the whitening bias's lr falls to 0", ge=0)


Model = Annotated[LeNet | FC512 | BNCNN | ResNet | FastNet, Field(discriminator="name")]

# --- optimizer= (cifarlab.training.optimizers) ----------------------------------------------------

_DECAY = "its weight decay is divided by it"


class _Optimizer(Section):
    name: str = key("the optimizer")
    lr: float = key("learning rate (the schedule's peak)", gt=0, allow_inf_nan=False)
    weight_decay: float = key("weight decay (SGD: the L2 term; AdamW: decoupled)", ge=0)
    norm_lr_mult: float = key(f"lr multiplier of BatchNorm parameters; {_DECAY}", gt=0)
    bias_lr_mult: float = key(f"lr multiplier of the other biases; {_DECAY}", gt=0)
    no_decay_norm_bias: bool = key("true: no weight decay on biases and BatchNorm parameters")


class _Momentum(_Optimizer):
    momentum: float = key("SGD momentum", ge=0, lt=1)
    nesterov: bool = key("Nesterov momentum (needs momentum > 0)")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> _Momentum:
        if self.nesterov and self.momentum == 0:
            raise ValueError(
                "optimizer.nesterov=true needs optimizer.momentum > 0 (torch's SGD refuses "
                "Nesterov without momentum); set optimizer.momentum=0.9 or "
                "optimizer.nesterov=false."
            )
        return self


class SGD(_Momentum):
    name: Literal["sgd"] = key("SGD with momentum")


class AdamW(_Optimizer):
    name: Literal["adamw"] = key("AdamW")
    betas: list[Annotated[float, at.Ge(0), at.Lt(1)]] = key(
        "Adam's decay rates of the two moment estimates", min_length=2, max_length=2
    )


class Muon(_Momentum):
    name: Literal["muon"] = key("Muon for conv filters, Nesterov SGD (lr, momentum) for the rest")
    muon_lr: float = key("step of the conv filters, per unit of filter norm", gt=0)
    muon_momentum: float = key("Nesterov momentum of the conv filters", ge=0, lt=1)


Optimizer = Annotated[SGD | AdamW | Muon, Field(discriminator="name")]

# --- scheduler= (cifarlab.training.schedules): each stepped once per optimizer step ---------------


class NoSchedule(Section):
    name: Literal["none"] = key("the lr stays optimizer.lr")


class OneCycle(Section):
    name: Literal["onecycle"] = key("linear warm-up to optimizer.lr, then linear decay to ~0")
    pct_start: float = key("fraction of the steps spent rising to the peak", ge=0, le=1)


class Cosine(Section):
    name: Literal["cosine"] = key("linear warm-up from 0, then cosine decay to 0")
    warmup_pct: float = key("fraction of the steps of warm-up", ge=0, lt=1)


class Triangular(Section):
    name: Literal["triangular"] = key("airbench's: linear up to the peak, then linear down")
    start: float = key("the lr at step 0, as a fraction of optimizer.lr", ge=0)
    peak_pct: float = key("where the peak is, as a fraction of all steps", ge=0, lt=1)
    end: float = key("the lr at the last step, as a fraction of optimizer.lr", ge=0)


Scheduler = Annotated[NoSchedule | OneCycle | Cosine | Triangular, Field(discriminator="name")]

# --- data (cifarlab.data.CIFAR10DataModule) -----------------------------------------------------

Source = Literal["cifar10", "cifar100", "folder"]


def data_conflict(data: dict[str, Any]) -> str | None:
    """Why these data settings cannot go together (a key that fits one source only), or None;
    eval.py asks it of a checkpoint's data settings with its overrides."""
    source = data.get("source")
    if data.get("label_type", "fine") != "fine" and source != "cifar100":
        return (
            f"data.label_type={data['label_type']} is for data.source=cifar100 only; "
            f"data.source={source} has one set of labels. Drop data.label_type, or use "
            "data.source=cifar100."
        )
    if data.get("image_size", 32) != 32 and source != "folder":
        return (
            f"data.image_size={data['image_size']} is for data.source=folder; data.source="
            f"{source} images are 32x32 as stored. Drop data.image_size."
        )
    if data.get("pad_mode") == "reflect" and data.get("crop_padding", 0) >= 32:
        return (
            f"data.crop_padding={data['crop_padding']} with data.pad_mode=reflect mirrors more "
            "than the 32-pixel image holds; use a padding below 32, or data.pad_mode=zeros."
        )
    return None


class Data(Section):
    source: Source = key("cifar10 | cifar100: torchvision's download | folder: root/{train,test}")
    image_size: int = key("folder only: the side every image is converted to", ge=16)
    label_type: Literal["fine", "coarse"] = key("cifar100 only: 100 classes | 20 superclasses")
    root: str = key("the data folder (downloads go here)", setup=True, location=True)
    cache_dir: str | None = key(
        "decoded-image cache; null = next to the data", setup=True, location=True
    )
    batch_size: int = key("training images per batch", ge=1)
    eval_batch_size: int = key("images per validation and test batch", ge=1)
    drop_last: bool = key("drop the last partial training batch (static shapes)")
    val_size: int = key("training images held out for validation (the same ones every run)", ge=0)
    classes: list[str] | None = key("only these classes, e.g. [airplane,bird]; null = all")
    augment: bool | Literal["none", "flip", "crop", "crop_flip"] = key(
        "true = random crop + flip, false = none, or one of the names"
    )
    crop_padding: int = key("pixels added on each side before the random crop", ge=0)
    pad_mode: Literal["zeros", "reflect"] = key("what the padding holds: zeros or the mirror")
    flip_mode: Literal["random", "alternate"] = key(
        "alternate: random in epoch 0, then each image the other way every epoch"
    )
    gather: Literal["split", "batch", "auto"] = key(
        "how crops are cut: pad the split once | per batch (MPS) | auto"
    )
    normalize: Literal["cifar10", "half"] = key("CIFAR-10's per-channel statistics | 0.5, 0.5")
    split_seed: int = key("picks the held-out validation images")
    channels_last: bool = key("NHWC batches and conv weights (faster convs on GPU tensor cores)")

    @model_validator(mode="after")
    def _fits_the_source(self) -> Data:
        problem = data_conflict(self.model_dump())
        if problem:
            raise ValueError(problem)
        return self


# --- training tricks ----------------------------------------------------------------------------


class BatchAug(Section):
    cutout: int = key("side in pixels of a square set to 0 in every image; 0 = off", ge=0)
    mixup_alpha: float = key("mixup with lam ~ Beta(alpha, alpha); 0 = off", ge=0)
    cutmix_alpha: float = key("cutmix with that alpha; with both > 0, one per batch", ge=0)


class Loss(Section):
    label_smoothing: float = key("of the training loss, e.g. 0.1 (airbench: 0.2)", ge=0, lt=1)


class EMA(Section):
    decay: float = key("exponential moving average of the weights per update; 0 = off", ge=0, lt=1)
    every_n_steps: int = key("optimizer steps between updates", ge=1)
    ramp_power: float = key("decay x (step / total steps) ** ramp_power (airbench: 3)", ge=0)
    lookahead: bool = key("copy the average back into the trained weights at each update")


class LrFind(Section):
    min_lr: float = key("the lr finder's first lr", gt=0)
    max_lr: float = key("its last lr", gt=0)
    num_training: int = key("its steps", ge=1)
