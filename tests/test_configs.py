"""Every option of every config group composes and builds the object it names."""

import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.types import RunMode

from cifarlab.config import TrainConfig, validate
from cifarlab.models import MODELS
from cifarlab.run.build import instantiate_all
from cifarlab.run.trainer import build_trainer
from cifarlab.training.module import ClassifierModule
from cifarlab.training.optimizers import EARLY_EPOCHS
from cifarlab.utils import to_plain_dict

from .conftest import CONF_DIR, compose_config, eval_cfg


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_model_config_names_a_registered_model() -> None:
    assert options("model") == sorted(MODELS)


STEPS, STEPS_PER_EPOCH = 20, 4  # the schedule's length in optimizer steps, and one epoch's


def expected_factor(scheduler: dict, step: int) -> float:
    """The lr at ``step`` as a fraction of the configured one, as conf/scheduler/*.yaml describe
    each schedule (worked out here, not by the code under test)."""
    t = step / STEPS
    if scheduler["name"] == "none":
        return 1.0
    if scheduler["name"] == "cosine":  # warmup_pct 0: cosine from 1 down to 0
        return 0.5 * (1 + math.cos(math.pi * t))
    if scheduler["name"] == "triangular":
        start, peak, end = scheduler["start"], scheduler["peak_pct"], scheduler["end"]
        if t < peak:
            return start + (1 - start) * t / peak
        return 1 + (end - 1) * (t - peak) / (1 - peak)
    if scheduler["name"] == "early":  # the early parameters (fastnet's whitening bias)
        return max(0.0, 1 - step / (scheduler["epochs"] * STEPS_PER_EPOCH))
    # onecycle (torch's defaults): from 1/25 up to 1 at pct_start, then down to 1/25/1e4
    top = scheduler["pct_start"] * STEPS - 1
    low, last = 1 / 25, 1 / 25 / 1e4
    if step <= top:
        return low + (1 - low) * step / top
    return 1 + (last - 1) * (step - top) / (STEPS - 1 - top)


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_model_optimizer_scheduler_compose_and_build(
    model: str, optimizer: str, scheduler: str
) -> None:
    """Each combination builds, its optimizer trains the net, and its schedule moves the lr of
    every parameter group as the scheduler's config says (a net's early parameters, fastnet's
    whitening bias, as theirs says, whatever the scheduler)."""
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
    validate(cfg, TrainConfig)
    assert cfg.model.name == model and cfg.model.width == 8
    assert cfg.optimizer.name == optimizer and cfg.optimizer.lr == 0.05
    module = ClassifierModule(
        model=to_plain_dict(cfg.model),
        class_names=["a", "b", "c"],
        optimizer=to_plain_dict(cfg.optimizer),
        scheduler=to_plain_dict(cfg.scheduler),
    )
    x = torch.randn(2, 3, 32, 32)
    assert module.net(x).shape == (2, 3)
    # configure_optimizers reads the schedule's and an epoch's length from the trainer, no more
    module.trainer = SimpleNamespace(  # type: ignore[assignment]
        estimated_stepping_batches=STEPS,
        train_dataloader=[],  # loaded
        num_training_batches=STEPS_PER_EPOCH,
        accumulate_grad_batches=1,
    )
    configured = module.configure_optimizers()
    early = {"name": "early", "epochs": cfg.model.get("whiten_bias_epochs")}
    if scheduler == "none" and model != "fastnet":
        optim, schedule = configured, None
    else:
        optim, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
        assert configured["lr_scheduler"]["interval"] == "step"
    base = [
        group.get("max_lr", group.get("initial_lr", group["lr"])) for group in optim.param_groups
    ]
    assert base[0] == pytest.approx(0.05)
    before = [p.detach().clone() for p in module.net.parameters()]
    torch.nn.functional.cross_entropy(module.net(x), torch.tensor([0, 1])).backward()
    for step in range(STEPS):
        for group, lr in zip(optim.param_groups, base, strict=True):
            schedule_of_group = early if EARLY_EPOCHS in group else to_plain_dict(cfg.scheduler)
            assert group["lr"] == pytest.approx(lr * expected_factor(schedule_of_group, step))
        optim.step()
        optim.zero_grad(set_to_none=True)  # later steps move only the schedule
        if schedule is not None and step < STEPS - 1:
            schedule.step()
    after = list(module.net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), "no training"


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
    validate(cfg, TrainConfig)
    precision = torch.get_float32_matmul_precision()  # the GPU presets set it
    try:
        trainer = build_trainer(
            cfg.trainer, cfg.hardware, logger=False, callbacks=[], enable_checkpointing=False
        )
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
    trainer = build_trainer(cfg.trainer, cfg.hardware, callbacks=callbacks, logger=loggers)
    assert isinstance(trainer, L.Trainer)
    assert trainer.checkpoint_callback is not None
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / "checkpoints")
    assert Path(trainer.logger.log_dir) == tmp_path / "tensorboard"


def test_data_overrides_reach_the_datamodule_config(cifar10_root: Path) -> None:
    """Each ``data.*`` override (and ``seed``) changes what the DataModule does, built from the
    composed config as run.train builds it; compared with the same DataModule without it."""
    from cifarlab.data import NORMALIZATIONS, CIFAR10DataModule

    base = ["data.source=cifar10", f"data.root={cifar10_root}", "data.val_size=10"]
    overrides = {
        "data.classes": "[bird,airplane]",
        "data.augment": "true",
        "data.normalize": "half",
        "data.batch_size": "4",
        "seed": "7",
    }

    def built(changes: dict[str, str] | None = None) -> CIFAR10DataModule:
        chosen = {**overrides, **(changes or {})}
        cfg = compose_config("train", [*base, *(f"{k}={v}" for k, v in chosen.items())])
        dm = CIFAR10DataModule(**to_plain_dict(cfg.data), seed=cfg.seed)
        dm.prepare_data()
        dm.setup()
        return dm

    cfg = compose_config("train", [*base, *(f"{k}={v}" for k, v in overrides.items())])
    assert to_plain_dict(cfg.data)["classes"] == ["bird", "airplane"]
    assert cfg.data.augment is True and cfg.seed == 7 and cfg.data.batch_size == 4
    dm = built()
    default = built({"data.classes": "null", "data.normalize": "cifar10", "data.batch_size": "128"})
    # classes: two of the ten, relabelled in the source's order, the same held-out images
    assert dm.class_names == ["airplane", "bird"] and len(default.class_names) == 10
    val, all_val = dm.splits["val"], default.splits["val"]
    assert len(all_val.labels) == 10
    for new, old in ((0, 0), (1, 2)):
        assert torch.equal(val.images[val.labels == new], all_val.images[all_val.labels == old])
    # batch_size: 4 per training batch (128 takes all 90 training images at once)
    assert {len(y) for _, y in dm.train_dataloader()} == {4}
    assert [len(y) for _, y in default.train_dataloader()] == [90]
    # normalize=half: pixels / 127.5 - 1 instead of CIFAR-10's statistics
    for module, normalize in ((dm, "half"), (default, "cifar10")):
        x, _ = next(iter(module.test_dataloader()))
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS[normalize])
        raw = module.splits["test"].images[: len(x)].float() / 255
        assert torch.allclose(x, (raw - mean) / std, atol=1e-5)
    # augment=true: the same images in the same order as without it, cropped and flipped
    unaugmented = built({"data.augment": "false"}).train_dataloader()
    for (x, y), (plain_x, plain_y) in zip(dm.train_dataloader(), unaugmented, strict=True):
        assert torch.equal(y, plain_y) and not torch.equal(x, plain_x)
    # seed=7: another order of the training images than seed 0
    orders = [
        torch.cat([x for x, _ in built({"data.augment": "false", "seed": seed}).train_dataloader()])
        for seed in ("0", "7")
    ]
    assert not torch.equal(*orders)


def test_eval_config_defaults_to_the_checkpoint(
    trained_lenet: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval.py with ckpt_path alone builds the data its run used (every data.* key of
    conf/eval.yaml is null); a key that is set replaces that one only."""
    import torch

    from cifarlab.run import build
    from cifarlab.run.jobs import evaluate

    made: list[dict] = []
    real = build.CIFAR10DataModule
    monkeypatch.setattr(build, "CIFAR10DataModule", lambda **kw: made.append(kw) or real(**kw))
    ckpt = trained_lenet["best_ckpt"]
    run_data = torch.load(ckpt, weights_only=True)["hyper_parameters"]["data"]
    for extra in ([], ["data.eval_batch_size=5"]):
        out = tmp_path / str(len(extra))
        metrics = evaluate(eval_cfg(ckpt, out, *extra))
        assert metrics["test/acc"] == pytest.approx(trained_lenet["test/acc"], abs=1e-6)
    assert made == [run_data, {**run_data, "eval_batch_size": 5}]
    assert run_data["eval_batch_size"] != 5


def test_a_trainer_argument_conf_does_not_set_reaches_the_trainer_with_a_plus(
    tmp_path: Path,
) -> None:
    """conf/trainer/ sets what cifarlab sets differently from Lightning; any other argument is
    added on the command line (the declaration leaves the Trainer's node open for it)."""
    cfg = compose_config(
        "train",
        ["trainer=cpu", "+trainer.accumulate_grad_batches=3", f"paths.output_dir={tmp_path}"],
    )
    validate(cfg, TrainConfig)
    trainer = build_trainer(cfg.trainer, cfg.hardware, logger=False, callbacks=[])
    assert trainer.accumulate_grad_batches == 3


def test_launcher_and_search_configs_compose() -> None:
    def hydra_node(*overrides: str):
        return compose_config("train", list(overrides), with_hydra=True).hydra

    slurm = hydra_node("hydra/launcher=slurm").launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1
    assert hydra_node("hydra/launcher=joblib").launcher._target_.endswith("JoblibLauncher")
    local = hydra_node("hydra/launcher=submitit_local").launcher
    assert local._target_.endswith("LocalLauncher")
    assert hydra_node("hparams_search=optuna_lr_width").mode == RunMode.MULTIRUN
    assert hydra_node().callbacks.sweep._target_ == "cifarlab.sweeps.summary.SweepCallback"
