"""Every option of every config group composes and builds the object it names."""

from pathlib import Path

import lightning as L
import pytest

from cifarlab.accelerators import build_trainer
from cifarlab.models import MODELS
from cifarlab.module import ClassifierModule
from cifarlab.run import _instantiate_all
from cifarlab.utils import plain

from .conftest import CONF_DIR, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_model_config_names_a_registered_model() -> None:
    assert options("model") == sorted(MODELS)


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_model_optimizer_scheduler_compose_and_build(
    model: str, optimizer: str, scheduler: str
) -> None:
    cfg = compose_config(
        "train",
        [
            f"model={model}",
            f"optimizer={optimizer}",
            f"scheduler={scheduler}",
            "model.width=8",
            "optimizer.lr=0.05",
        ],
    )
    assert cfg.model.name == model and cfg.model.width == 8
    assert cfg.optimizer.name == optimizer and cfg.optimizer.lr == 0.05
    module = ClassifierModule(
        model=plain(cfg.model),
        class_names=["a", "b", "c"],
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler),
    )
    assert module.net(__import__("torch").zeros(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("preset", options("trainer"))
def test_trainer_presets_compose(preset: str) -> None:
    cfg = compose_config("train", [f"trainer={preset}", "trainer.max_epochs=3"])
    assert cfg.trainer.max_epochs == 3
    expected = {
        "default": "auto",
        "cpu": "cpu",
        "gpu": "gpu",
        "mps": "mps",
        "ddp": "gpu",
        "ddp_cpu": "cpu",
    }[preset]
    assert cfg.trainer.accelerator == expected


def test_default_trainer_callbacks_and_logger_build(tmp_path: Path) -> None:
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}"])
    callbacks = _instantiate_all(cfg.callbacks)
    loggers = _instantiate_all(cfg.logger)
    # build_trainer: trainer.float32_matmul_precision is cifarlab's, not a Trainer argument
    trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert isinstance(trainer, L.Trainer)
    assert trainer.checkpoint_callback is not None
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / "checkpoints")
    assert Path(trainer.logger.log_dir) == tmp_path / "tensorboard"


def test_data_overrides_reach_the_datamodule_config() -> None:
    cfg = compose_config(
        "train",
        [
            "data.source=folder",
            "data.root=/x",
            "data.classes=[airplane,bird]",
            "data.augment=true",
            "data.normalize=half",
            "data.val_size=100",
            "data.batch_size=4",
            "seed=7",
        ],
    )
    assert plain(cfg.data)["classes"] == ["airplane", "bird"]
    assert cfg.data.augment is True and cfg.seed == 7 and cfg.data.batch_size == 4


def test_eval_config_defaults_to_the_checkpoint() -> None:
    cfg = compose_config("eval", ["ckpt_path=x.ckpt"])
    assert cfg.ckpt_path == "x.ckpt"
    assert all(value is None for value in cfg.data.values())


def test_every_trainer_argument_can_be_overridden_without_plus() -> None:
    import inspect

    arguments = set(inspect.signature(L.Trainer.__init__).parameters) - {
        "self",
        "callbacks",
        "logger",
    }
    cfg = compose_config("train", [])
    assert arguments <= set(cfg.trainer), sorted(arguments - set(cfg.trainer))
