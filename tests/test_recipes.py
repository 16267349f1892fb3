"""The experiment recipes of conf/experiment/ compose as documented and run end to end."""

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

from cifarlab.config import TrainConfig, validate
from cifarlab.run.build import build_task
from cifarlab.run.trainer import build_trainer

from .conftest import CONF_DIR, ROOT, compose_config, run_script

RECIPES = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# the line of docs/results.md that lists the recipes without a measured row yet
PENDING = "Recipes not measured on this machine yet:"


def results_doc() -> str:
    return (ROOT / "docs" / "results.md").read_text()


def recipe_runner():
    """benchmarks/run_recipes.py, the script that makes the Recipes tables of docs/results.md."""
    spec = importlib.util.spec_from_file_location("run_recipes", ROOT / "benchmarks/run_recipes.py")
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    return runner


def test_every_results_row_has_a_recipe() -> None:
    """Every recipe that docs/results.md names or the recipe runner runs is in conf/experiment/,
    and every recipe has a row in a results table (its first cell) or is listed as pending."""
    doc = results_doc()
    named = set(re.findall(r"experiment=(\w+)", doc))
    assert named <= set(RECIPES), sorted(named - set(RECIPES))
    assert set(recipe_runner().RECIPES) <= set(RECIPES)
    rows = {
        line.split("|")[1].split()[0]
        for line in doc.splitlines()
        if line.startswith("| ") and not line.startswith("| ---")
    }
    pending_lines = [line for line in doc.splitlines() if line.startswith(PENDING)]
    pending = set(re.findall(r"`(\w+)`", pending_lines[0])) if pending_lines else set()
    assert pending <= set(RECIPES) and not pending & rows, sorted(pending & rows)
    missing = set(RECIPES) - rows - pending
    assert not missing, f"no row in docs/results.md and not listed after {PENDING!r}: {missing}"


def test_tutorial_recipe_is_the_tutorial() -> None:
    cfg = compose_config("train", ["experiment=tutorial_lenet"])
    assert (cfg.model.name, cfg.model.width) == ("lenet", 6)
    assert cfg.data.batch_size == 4 and cfg.data.normalize == "half" and cfg.data.augment is False
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.lr == 0.001
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 0.0
    assert cfg.scheduler.name == "none" and cfg.trainer.max_epochs == 2
    assert cfg.data.val_size == 0 and cfg.callbacks.model_checkpoint.monitor is None


def test_airplane_vs_bird_recipe_is_the_reference_task() -> None:
    cfg = compose_config("train", ["experiment=airplane_vs_bird"])
    assert list(cfg.data.classes) == ["airplane", "bird"]
    assert cfg.model.name == "bn_cnn"
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == (
        "sgd",
        0.01,
        0.001,
    )


# recipes meant for a GPU, allowed a longer schedule than the 2-core CPU's 20 epochs
GPU_RECIPES = {"resnet18": 40}
CIFAR10_TRAIN_IMAGES_PER_CLASS = 5000


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_stay_within_20_epochs_and_accept_overrides(recipe: str, tmp_path: Path) -> None:
    """Built as train.py builds them: overrides reach the DataModule, the module and the Trainer,
    and the recipe's own schedule (max_epochs, or max_steps of its batches on the real CIFAR-10
    training images) is at most 20 epochs (40 for GPU recipes)."""
    cfg = compose_config(
        "train",
        [
            f"experiment={recipe}",
            "trainer.max_epochs=1",
            "seed=3",
            "model.width=4",
            f"paths.output_dir={tmp_path}",
        ],
    )
    validate(cfg, TrainConfig)
    datamodule, module = build_task(cfg)
    trainer = build_trainer(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    assert trainer.max_epochs == 1 and datamodule.hparams.seed == 3
    assert module.hparams.data["seed"] == 3 and module.hparams.model["width"] == 4

    own = compose_config("train", [f"experiment={recipe}"])
    images = CIFAR10_TRAIN_IMAGES_PER_CLASS * len(datamodule.class_names) - own.data.val_size
    batches = images / own.data.batch_size
    steps_per_epoch = math.floor(batches) if own.data.drop_last else math.ceil(batches)
    epochs = own.trainer.max_epochs
    if own.trainer.max_steps > 0:
        epochs = min(epochs, own.trainer.max_steps / steps_per_epoch)
    assert epochs <= GPU_RECIPES.get(recipe, 20)


def test_resnet18_recipe_is_the_standard_one() -> None:
    cfg = compose_config("train", ["experiment=resnet18"])
    assert (cfg.model.name, cfg.model.width, cfg.model.depth) == ("resnet", 64, 18)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum) == ("sgd", 0.1, 0.9)
    assert cfg.optimizer.nesterov is True and cfg.optimizer.weight_decay == 5e-4
    assert cfg.data.batch_size == 128 and cfg.data.augment is True
    assert cfg.scheduler.name == "onecycle" and cfg.batch_aug.cutout == 8
    assert 30 <= cfg.trainer.max_epochs <= 40


def test_fastnet_sgd_recipe_is_airbench94s() -> None:
    cfg = compose_config("train", ["experiment=fastnet_sgd"])
    assert (cfg.model.name, cfg.model.width) == ("fastnet", 64)
    assert (cfg.data.batch_size, cfg.data.val_size, cfg.data.crop_padding) == (1024, 0, 2)
    assert (cfg.data.pad_mode, cfg.data.flip_mode) == ("reflect", "alternate")
    # 11.5 per 1024 summed examples at momentum 0.85 = 1.5 on the mean loss
    assert cfg.optimizer.lr == pytest.approx(11.5 / (1 + 1 / (1 - 0.85)), rel=1e-3)
    assert (cfg.optimizer.momentum, cfg.optimizer.nesterov) == (0.85, True)
    assert cfg.optimizer.weight_decay == pytest.approx(0.0153 / 11.5, rel=1e-2)
    assert cfg.optimizer.norm_lr_mult == 64 and cfg.scheduler.name == "triangular"
    assert cfg.loss.label_smoothing == 0.2 and cfg.tta == "flip_translate"
    assert (cfg.ema.every_n_steps, cfg.ema.lookahead) == (5, True)
    assert cfg.ema.decay == pytest.approx(0.95**5, abs=1e-4)
    assert cfg.trainer.max_steps == 476  # 9.9 epochs of 50,000 // 1024 batches


def test_fastnet_recipes_are_airbench94_muons() -> None:
    cfg = compose_config("train", ["experiment=fastnet"])
    assert (cfg.model.name, cfg.model.width) == ("fastnet", 64)
    assert (cfg.data.batch_size, cfg.data.val_size, cfg.data.crop_padding) == (2000, 0, 2)
    assert (cfg.data.pad_mode, cfg.data.flip_mode) == ("reflect", "alternate")
    opt = cfg.optimizer
    assert (opt.name, opt.muon_lr, opt.muon_momentum) == ("muon", 0.24, 0.6)
    # airbench94_muon: summed loss, head output / 256 (weights of std 1), batch 2000; here: mean
    # loss, head x 1/9 (default init). The same head step: 0.67 x 2000 / 256**2 x 9**2
    assert opt.lr == pytest.approx(0.67 * 2000 / 256**2 * 9**2, rel=2e-2)
    assert opt.lr * opt.norm_lr_mult == pytest.approx(0.053 * 2000, rel=2e-2)
    assert opt.bias_lr_mult == opt.norm_lr_mult
    assert opt.lr * opt.weight_decay == pytest.approx(2e-6 * 2000, rel=2e-2)
    assert (opt.momentum, opt.nesterov) == (0.85, True)
    sched = cfg.scheduler
    assert (sched.name, sched.start, sched.peak_pct, sched.end) == ("triangular", 1.0, 0.0, 0.0)
    assert cfg.loss.label_smoothing == 0.2 and cfg.tta == "flip_translate"
    assert cfg.ema.decay == 0.0 and cfg.trainer.max_epochs == 10
    cpu = compose_config("train", ["experiment=fastnet_cpu"])
    assert (cpu.model.width, cpu.trainer.max_epochs) == (32, 8)
    assert cpu.optimizer == cfg.optimizer and cpu.data == cfg.data


@pytest.mark.slow
def test_a_results_row_replays_end_to_end(cifar10_root: Path, tmp_path: Path) -> None:
    """The airplane_vs_bird row's command, shortened to one epoch on tiny data."""
    proc = run_script(
        "train.py",
        "experiment=airplane_vs_bird",
        f"data.root={cifar10_root}",
        "data.val_size=10",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["test/acc_class"]) == {"airplane", "bird"}
    assert metrics["model"] == "bn_cnn" and metrics["epochs"] == 1
    assert "airplane" in proc.stdout and "overall" in proc.stdout
