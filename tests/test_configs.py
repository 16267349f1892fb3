"""Every option of every config group composes and builds the object it names."""

from pathlib import Path

import lightning as L
import pytest

from cifarlab.accelerators import build_trainer
from cifarlab.build import instantiate_all
from cifarlab.models import MODELS
from cifarlab.module import ClassifierModule
from cifarlab.utils import to_plain_dict

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
        model=to_plain_dict(cfg.model),
        class_names=["a", "b", "c"],
        optimizer=to_plain_dict(cfg.optimizer),
        scheduler=to_plain_dict(cfg.scheduler),
    )
    assert module.net(__import__("torch").zeros(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("preset", options("trainer"))
def test_trainer_presets_build_the_trainer_they_name(preset: str, tmp_path: Path) -> None:
    """Each preset builds the Trainer it names where the hardware is there (accelerator, device
    count, DDP or not), and is refused, naming what this machine has, where it is not."""
    import torch
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator
    from lightning.pytorch.strategies import DDPStrategy

    from cifarlab.errors import CifarlabError

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    auto = CUDAAccelerator if cuda else MPSAccelerator if mps else CPUAccelerator
    gpus = torch.cuda.device_count() if cuda else 0
    expected = {  # preset: (accelerator, devices, DDP, what it needs)
        "default": (auto, 1, False, True),
        "cpu": (CPUAccelerator, 1, False, True),
        "ddp_cpu": (CPUAccelerator, 2, True, True),
        "gpu": (auto, 1, False, cuda or mps),
        "mps": (MPSAccelerator, 1, False, mps),
        "ddp": (CUDAAccelerator, gpus, True, cuda),
    }[preset]
    accelerator, devices, ddp, available = expected
    cfg = compose_config(
        "train", [f"trainer={preset}", "trainer.max_epochs=3", f"paths.output_dir={tmp_path}"]
    )
    precision = torch.get_float32_matmul_precision()  # the GPU presets set it
    try:
        trainer = build_trainer(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    except CifarlabError as err:
        assert not available and "this machine has" in str(err)
        return
    finally:
        torch.set_float32_matmul_precision(precision)
    assert available and trainer.max_epochs == 3
    assert isinstance(trainer.accelerator, accelerator) and trainer.num_devices == devices
    assert isinstance(trainer.strategy, DDPStrategy) is ddp


def test_default_trainer_callbacks_and_logger_build(tmp_path: Path) -> None:
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}"])
    callbacks = instantiate_all(cfg.callbacks)
    loggers = instantiate_all(cfg.logger)
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
    assert to_plain_dict(cfg.data)["classes"] == ["airplane", "bird"]
    assert cfg.data.augment is True and cfg.seed == 7 and cfg.data.batch_size == 4


def test_eval_config_defaults_to_the_checkpoint(
    trained_lenet: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval.py with ckpt_path alone builds the data its run used (every data.* key of
    conf/eval.yaml is null); a key that is set replaces that one only."""
    import torch

    from cifarlab import build
    from cifarlab.run import evaluate

    made: list[dict] = []
    real = build.CIFAR10DataModule
    monkeypatch.setattr(build, "CIFAR10DataModule", lambda **kw: made.append(kw) or real(**kw))
    ckpt = trained_lenet["best_ckpt"]
    run_data = torch.load(ckpt, weights_only=True)["hyper_parameters"]["data"]
    for extra in ([], ["data.eval_batch_size=5"]):
        out = tmp_path / str(len(extra))
        metrics = evaluate(
            compose_config(
                "eval",
                [f"ckpt_path={ckpt}", f"paths.output_dir={out}", "trainer.accelerator=cpu", *extra],
            )
        )
        assert metrics["test/acc"] == pytest.approx(trained_lenet["test/acc"], abs=1e-6)
    assert made == [run_data, {**run_data, "eval_batch_size": 5}]
    assert run_data["eval_batch_size"] != 5


def test_every_trainer_argument_can_be_overridden_without_plus() -> None:
    import inspect

    arguments = set(inspect.signature(L.Trainer.__init__).parameters) - {
        "self",
        "callbacks",
        "logger",
    }
    cfg = compose_config("train", [])
    assert arguments <= set(cfg.trainer), sorted(arguments - set(cfg.trainer))
