"""Short real runs of train.py's and eval.py's jobs on tiny data."""

import json
from pathlib import Path

import pytest
import torch

from cifarlab.run.jobs import evaluate, train

from .conftest import compose_config, eval_cfg, quick_overrides, run_script, sweep_overrides


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("lenet", []),
        ("fc512", []),
        ("bn_cnn", []),
        ("bn_cnn", ["model.batchnorm=false"]),
        ("resnet", ["model.width=4"]),
    ],
)
def test_fit_and_test_each_model(
    folder_root: Path, tmp_path: Path, model: str, options: list[str]
) -> None:
    cfg = compose_config(
        "train",
        [*quick_overrides(folder_root, tmp_path), f"model={model}", "model.width=8", *options],
    )
    metrics = train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["status"] == "completed" and saved["epochs"] == 2
    assert set(saved["test/acc_class"]) == {"bird", "cat", "frog"}
    assert 0.0 <= saved["test/acc"] <= 1.0 and 0.0 <= saved["val/acc_best"] <= 1.0
    assert Path(saved["best_ckpt"]).is_file() and Path(saved["last_ckpt"]).is_file()
    assert (tmp_path / "per_class_accuracy.png").stat().st_size > 1000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_a_learnable_task_is_learned(folder_root: Path, tmp_path: Path) -> None:
    """The tiny classes differ by colour: a working loop must beat chance (33%) by far."""
    cfg = compose_config(
        "train", [*quick_overrides(folder_root, tmp_path), "model=bn_cnn", "trainer.max_epochs=4"]
    )
    assert train(cfg)["test/acc"] >= 0.9


def test_eval_reproduces_the_runs_test_accuracy(folder_root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "train",
        [*quick_overrides(folder_root, tmp_path / "run"), "model=lenet", "data.classes=[cat,frog]"],
    )
    trained = train(cfg)
    evaluated = evaluate(eval_cfg(trained["best_ckpt"], tmp_path / "eval"))
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    assert evaluated["test/acc_class"] == pytest.approx(trained["test/acc_class"], abs=1e-6)
    assert set(evaluated["test/acc_class"]) == {"cat", "frog"}
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_resnet_with_cutout_mixup_and_cutmix_trains_and_evaluates(
    folder_root: Path, tmp_path: Path
) -> None:
    """The batch augmentations run inside fit, are kept in the checkpoint, and eval.py (which
    never augments) reproduces the run's test figures from it."""
    cfg = compose_config(
        "train",
        [
            *quick_overrides(folder_root, tmp_path / "run"),
            "model=resnet",
            "model.width=4",
            "batch_aug=cutmix",
            "batch_aug.cutout=8",
            "batch_aug.mixup_alpha=0.4",
        ],
    )
    trained = train(cfg)
    assert trained["status"] == "completed" and trained["epochs"] == 2
    hparams = torch.load(trained["last_ckpt"], weights_only=True)["hyper_parameters"]
    assert hparams["batch_aug"] == {"cutout": 8, "mixup_alpha": 0.4, "cutmix_alpha": 1.0}
    evaluated = evaluate(eval_cfg(trained["best_ckpt"], tmp_path / "eval"))
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)


@pytest.mark.slow  # 13-52 s; moved out of the default suite to keep it under 5 minutes
def test_multirun_sweeps_a_2x2_grid(folder_root: Path, tmp_path: Path) -> None:
    overrides = sweep_overrides(folder_root, tmp_path)
    sweep = tmp_path / "sweep"
    proc = run_script(
        "train.py",
        "-m",
        "model=bn_cnn",
        "optimizer.lr=0.1,0.01",
        "model.width=4,8",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        *overrides,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(sweep.glob("*/metrics.json"))
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        overrides_file = job.parent / ".hydra" / "overrides.yaml"
        seen.add(
            tuple(
                sorted(
                    line
                    for line in overrides_file.read_text().splitlines()
                    if "lr=" in line or "width=" in line
                )
            )
        )
        assert json.loads(job.read_text())["status"] == "completed"
    assert len(seen) == 4


def test_entry_points_print_one_paragraph_for_user_errors(
    folder_root: Path, tmp_path: Path
) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_script("train.py", "model=resnet18", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "resnet18" in proc.stderr
    proc = run_script(
        "train.py",
        "data.source=folder",
        f"data.root={folder_root}",
        "model=bn_cnn",
        "model.width=7",
        f"hydra.run.dir={tmp_path}/r",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "model.width=7" in proc.stderr
    proc = run_script("eval.py", f"hydra.run.dir={tmp_path}/e", cwd=tmp_path)
    assert proc.returncode == 2 and "ckpt_path" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "r", "e"])
