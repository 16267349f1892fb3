"""cifarlab.config: a bad value is refused in one paragraph that names the key, what it takes and
how to look it up; every key is listed for docs/configuration.md; the setup keys are one list."""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from cifarlab.config import (
    SETUP_KEYS,
    EvalConfig,
    ExportConfig,
    PredictConfig,
    TrainConfig,
    validate,
)
from cifarlab.config.entries import Entry
from cifarlab.config.listing import markdown, table_in
from cifarlab.errors import CifarlabError

from .conftest import CONF_DIR, ROOT, compose_config


@functools.cache
def composed(name: str, *groups: str) -> DictConfig:
    return compose_config(name, list(groups))


def refusal(entry: type[Entry], groups: tuple[str, ...], values: dict[str, Any]) -> str:
    """The paragraph that refuses ``values`` set on conf/'s config with ``groups`` chosen."""
    name = entry.script.removesuffix(".py")
    cfg = copy.deepcopy(composed(name, *groups))
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(CifarlabError) as refused:
        validate(cfg, entry)
    return str(refused.value)


@pytest.mark.parametrize(
    ("groups", "values", "needle"),
    [
        ((), {"optimizer.lr": -1}, "optimizer.lr=-1 must be a number > 0: learning rate"),
        ((), {"optimizer.name": "adam"}, "optimizer.name='adam' is not known; choose one of sgd"),
        (("optimizer=muon",), {"optimizer.muon_lr": -1}, "optimizer.muon_lr=-1 must be a number"),
        (("optimizer=muon",), {"optimizer.muon_momentum": 1.5}, "muon_momentum=1.5 must be a nu"),
        (("optimizer=muon",), {"optimizer.bias_lr_mult": 0}, "optimizer.bias_lr_mult=0 must be"),
        (
            ("optimizer=sgd",),
            {"optimizer.momentum": 0, "optimizer.nesterov": True},
            "optimizer.nesterov=true needs optimizer.momentum > 0",
        ),
        ((), {"optimizer.betas": [0.9, 1.0]}, "optimizer.betas=[0.9, 1.0] must be a list of 2 num"),
        ((), {"data.batch_size": -4}, "data.batch_size=-4 must be a whole number >= 1"),
        ((), {"model.name": "resnet50"}, "model.name='resnet50' is not known; choose one of lenet"),
        (("model=fc512",), {"model.width": 0}, "model.width=0 must be a whole number >= 1"),
        (("model=bn_cnn",), {"model.width": 7}, "model.width=7 does not fit bn_cnn"),
        (("model=bn_cnn",), {"model.width": 1}, "model.width=1 does not fit bn_cnn"),
        (("model=bn_cnn",), {"model.batchnorm": "no"}, "model.batchnorm='no' must be true or f"),
        ((), {"model.depth": 18}, "model.depth is not a key of model=lenet, whose keys are name"),
        (("model=resnet",), {"model.depth": 50}, "model.depth=50 must be one of 18, 34"),
        (("model=resnet",), {"model.depth": True}, "model.depth=true must be one of 18, 34"),
        (("model=fastnet",), {"model.whiten_bias_epochs": -1}, "whiten_bias_epochs=-1 must be a"),
        (("model=fastnet",), {"model.whiten_bias_epochs": 1.5}, "whiten_bias_epochs=1.5 must be"),
        ((), {"model.compile": "yes"}, "model.compile='yes' must be true or false"),
        ((), {"data.channels_last": 1}, "data.channels_last=1 must be true or false"),
        ((), {"batch_aug.cutout": -8}, "batch_aug.cutout=-8 must be a whole number >= 0"),
        ((), {"batch_aug.cutout": 2.5}, "batch_aug.cutout=2.5 must be a whole number >= 0"),
        ((), {"batch_aug.cutmix_alpha": "1"}, "batch_aug.cutmix_alpha='1' must be a number >= 0"),
        ((), {"batch_aug.cutmix": 1.0}, "batch_aug.cutmix is not a key of batch_aug"),
        ((), {"data.augment": "rotate"}, "data.augment='rotate' must be true or false or one of"),
        ((), {"data.pad_mode": "edge"}, "data.pad_mode='edge' must be one of zeros, reflect"),
        ((), {"data.gather": "gpu"}, "data.gather='gpu' must be one of split, batch, auto"),
        ((), {"data.drop_last": "yes"}, "data.drop_last='yes' must be true or false"),
        ((), {"data.normalize": "imagenet"}, "data.normalize='imagenet' must be one of cifar10"),
        ((), {"data.source": "imagenet"}, "data.source='imagenet' must be one of cifar10, cifar1"),
        (
            (),
            {"data.crop_padding": 32, "data.pad_mode": "reflect"},
            "data.crop_padding=32 with data.pad_mode=reflect mirrors more than",
        ),
        ((), {"data.label_type": "coarse"}, "data.label_type=coarse is for data.source=cifar100"),
        ((), {"data.label_type": "medium"}, "data.label_type='medium' must be one of fine, coarse"),
        ((), {"data.image_size": 64}, "data.image_size=64 is for data.source=folder"),
        ((), {"data.image_size": 8}, "data.image_size=8 must be a whole number >= 16"),
        ((), {"scheduler.pct_start": 1.5}, "scheduler.pct_start=1.5 must be a number in [0, 1]"),
        ((), {"tune": "batch_size"}, "tune='batch_size' must be lr_find, or null"),
        ((), {"lr_find.min_lr": 2.0}, "lr_find.min_lr=2.0 must be below lr_find.max_lr=1.0"),
        (
            (),
            {"callbacks.early_stopping.patience": 0},
            "callbacks.early_stopping.patience=0 must be a whole number >= 1",
        ),
        ((), {"loss.label_smoothing": 1.0}, "loss.label_smoothing=1.0 must be a number in [0, 1)"),
        ((), {"ema.decay": 1.0}, "ema.decay=1.0 must be a number in [0, 1)"),
        ((), {"ema.every_n_steps": 0}, "ema.every_n_steps=0 must be a whole number >= 1"),
        (
            (),
            {"hardware.keep_freed_host_memory": "sometimes"},
            "hardware.keep_freed_host_memory='sometimes' must be auto or true or false",
        ),
        ((), {"hardware.float32_matmul_precision": "tf32"}, "one of highest, high, medium"),
        ((), {"trainer.devices": 1.5}, "trainer.devices=1.5 must be a whole number, text or a"),
    ],
)
def test_a_bad_train_value_is_one_paragraph_naming_the_key(
    groups: tuple[str, ...], values: dict[str, Any], needle: str
) -> None:
    message = refusal(TrainConfig, groups, values)
    assert needle in message and "\n" not in message, message
    assert message.endswith("`train.py --help` lists every key with what it takes.")


@pytest.mark.parametrize(
    ("entry", "values", "needle"),
    [
        (EvalConfig, {"calibrate": "maybe"}, "calibrate='maybe' must be true or false"),
        (EvalConfig, {"tta": "rotate"}, "tta='rotate' must be one of none, flip, flip_translate"),
        (EvalConfig, {"data.eval_batch_size": 0}, "data.eval_batch_size=0 must be a whole number"),
        (PredictConfig, {"batch_size": 0}, "batch_size=0 must be a whole number >= 1"),
        (PredictConfig, {"top_k": True}, "top_k=true must be a whole number >= 1"),
        (ExportConfig, {"format": "zip"}, "format='zip' must be one of state_dict, torchscript"),
        (ExportConfig, {"overwrite": "yes"}, "overwrite='yes' must be true or false"),
    ],
)
def test_a_bad_value_of_the_other_scripts_names_the_key(
    entry: type[Entry], values: dict[str, Any], needle: str
) -> None:
    message = refusal(entry, (), values)
    assert needle in message and f"`{entry.script} --help`" in message, message


def test_every_bad_key_is_in_the_one_paragraph() -> None:
    message = refusal(TrainConfig, (), {"optimizer.lr": 0, "data.val_size": -1, "seed": "x"})
    assert "\n" not in message
    for key in ("optimizer.lr=0 ", "data.val_size=-1 ", "seed='x' "):
        assert message.count(key) == 1, message


def test_the_declaration_takes_every_logger_and_the_search() -> None:
    """(The options of the other groups are validated where tests build them: test_configs,
    test_recipes.)"""
    cfg = composed(
        "train", "logger=[tensorboard,csv,mlflow,wandb]", "hparams_search=optuna_lr_width"
    )
    validate(cfg, TrainConfig)
    assert set(cfg.logger) == {"tensorboard", "csv", "mlflow", "wandb"} and cfg.search.prune


def test_the_keys_table_of_the_docs_is_the_declaration() -> None:
    """docs/configuration.md holds the tables ``python -m cifarlab.config`` writes from the
    declaration and conf/: a key, range, doc or default changed in one is changed in the page."""
    assert table_in(ROOT / "docs" / "configuration.md") == markdown(CONF_DIR), (
        "docs/configuration.md differs from the declaration: run python -m cifarlab.config"
    )


def test_hydra_leaves_the_declared_setup_keys_out_of_a_jobs_name() -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            ["data.root=/elsewhere", "trainer.devices=2", "optimizer.lr=0.1", "trainer=cpu"],
            return_hydra_config=True,
        )
    assert set(SETUP_KEYS) <= set(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert cfg.hydra.job.override_dirname == "optimizer.lr=0.1"
    assert {"data.root", "trainer.devices", "paths.output_dir"} <= set(SETUP_KEYS)
    assert not {"data.source", "optimizer.lr", "model.width"} & set(SETUP_KEYS)
