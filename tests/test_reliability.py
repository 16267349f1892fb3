"""Reliability: bad input is named, interrupted runs resume exactly, checkpoints load safely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifarlab.data import cache_path, load_split
from cifarlab.errors import CifarlabError
from cifarlab.module import ClassifierModule
from cifarlab.reliability import AtomicCheckpointIO, resume_config
from cifarlab.run import evaluate, train

from .conftest import ROOT, compose_config, make_folder, quick_overrides, run_script

RESUME_RUN = [
    "data.source=cifar10",
    "data.val_size=30",
    "model=bn_cnn",
    "model.width=8",
    "optimizer.lr=1e-3",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    # the batch augmentations' draws must continue exactly too
    "batch_aug.cutout=4",
    "batch_aug.mixup_alpha=0.1",
    "batch_aug.cutmix_alpha=0.1",
]


def train_cfg(root: Path, out: Path, *extra: str):
    """A quick run on ``root``; ``extra`` overrides replace quick_overrides' values of a key."""
    keys = {o.split("=", 1)[0] for o in extra}
    base = [o for o in quick_overrides(root, out) if o.split("=", 1)[0] not in keys]
    return compose_config("train", [*base, *extra])


def stop_during(monkeypatch: pytest.MonkeyPatch, epoch: int, batch: int, stop) -> None:
    """Makes training step ``batch`` of ``epoch`` call ``stop()`` (raise or signal), once."""
    original = ClassifierModule.training_step

    def step(self, data, batch_idx):
        if self.current_epoch == epoch and batch_idx == batch:
            monkeypatch.setattr(ClassifierModule, "training_step", original)
            stop()
        return original(self, data, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", step)


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard curve of a run as (step, value) pairs, as TensorBoard would show them."""
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_result(
    cifar10_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = train(train_cfg(cifar10_root, tmp_path / "whole", *RESUME_RUN))
    assert whole["best_ckpt"].startswith(str(tmp_path / "whole/checkpoints/epoch002"))

    run = tmp_path / "cut"
    stop_during(monkeypatch, epoch=1, batch=2, stop=keyboard_interrupt)
    with pytest.raises(SystemExit) as info:
        train(train_cfg(cifar10_root, run, *RESUME_RUN))
    assert info.value.code == 130
    saved = json.loads((run / "metrics.json").read_text())
    last = run / "checkpoints" / "last.ckpt"
    assert saved["status"] == "interrupted" and saved["last_ckpt"] == str(last)
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the last completed epoch

    resumed = train(compose_config("train", [f"ckpt_path={last}"]))
    assert resumed["output_dir"] == str(run)
    for key in ("test/acc", "test/loss", "test/acc_class", "val/acc_best", "epochs"):
        assert resumed[key] == whole[key], key
    final = torch.load(last, weights_only=True)["state_dict"]
    reference = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in reference["state_dict"].items())
    curves, reference_curves = scalars(run), scalars(tmp_path / "whole")
    assert curves.keys() == reference_curves.keys()
    for tag, points in reference_curves.items():
        assert [s for s, _ in curves[tag]] == [s for s, _ in points], tag
        assert [v for _, v in curves[tag]] == pytest.approx([v for _, v in points]), tag


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_keeps_the_last_completed_epoch_in_plain_data(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny task peaks at epoch 0, so epoch 1 saves no better checkpoint, yet last.ckpt
    must hold it (Lightning alone would keep epoch 0 there)."""
    saved_through: list[str] = []
    atomic_save = AtomicCheckpointIO.save_checkpoint

    def recording_save(self, checkpoint, path, storage_options=None):
        saved_through.append(Path(path).name)
        atomic_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording_save)
    stop_during(monkeypatch, epoch=2, batch=1, stop=sigterm)
    with pytest.raises(SystemExit) as info:
        train(train_cfg(folder_root, tmp_path, "trainer.max_epochs=3"))
    assert info.value.code == 143
    assert saved_through.count("last.ckpt") == 2  # epochs 0 and 1, both written atomically
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "interrupted" and saved["epochs"] == 2
    assert f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}" in saved["message"]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2 * 6
    assert ckpt["cifarlab_config"]["paths"]["output_dir"] == str(tmp_path)

    def kinds(value: object) -> set[type]:
        if isinstance(value, dict):
            return {dict} | {t for k, v in value.items() for t in kinds(k) | kinds(v)}
        if isinstance(value, (list, tuple)):
            return {type(value)} | {t for v in value for t in kinds(v)}
        return {type(value)}

    assert kinds(ckpt) <= {dict, list, tuple, str, int, float, bool, type(None), torch.Tensor}
    assert not list(tmp_path.rglob("*.tmp"))


def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop_during(monkeypatch, epoch=0, batch=1, stop=keyboard_interrupt)
    with pytest.raises(SystemExit) as info:
        train(train_cfg(folder_root, tmp_path))
    assert info.value.code == 130
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "interrupted" and saved["last_ckpt"] is None
    assert "before its first epoch completed" in saved["message"]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_failed_checkpoint_write_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2), "x": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def nan_loss_from_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    original = ClassifierModule.training_step

    def step(self, data, batch_idx):
        loss = original(self, data, batch_idx)
        return loss * float("nan") if self.current_epoch >= epoch else loss

    monkeypatch.setattr(ClassifierModule, "training_step", step)


def test_non_finite_loss_stops_the_run_and_keeps_the_best_checkpoint(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nan_loss_from_epoch(monkeypatch, epoch=1)
    metrics = train(train_cfg(folder_root, tmp_path, "trainer.max_epochs=4"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "diverged" and saved["epochs"] == 1
    assert "loss became nan at epoch 1, batch 0" in saved["message"]
    assert saved["test/acc"] == metrics["test/acc"] > 0.9  # tested on the epoch-0 checkpoint
    for path in (saved["best_ckpt"], saved["last_ckpt"]):
        state = torch.load(path, weights_only=True)
        assert state["epoch"] == 0
        assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_divergence_in_the_first_epoch_is_reported_without_a_checkpoint(
    folder_root: Path, tmp_path: Path
) -> None:
    cfg = train_cfg(folder_root, tmp_path, "optimizer=sgd", "optimizer.lr=1e30")
    metrics = train(cfg)
    assert metrics["status"] == "diverged" and metrics["best_ckpt"] is None
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


@pytest.fixture(scope="module")
def trained(folder_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last.ckpt of a one-epoch run on the three-class folder data."""
    out = tmp_path_factory.mktemp("trained")
    train(train_cfg(folder_root, out, "trainer.max_epochs=1"))
    return out / "checkpoints" / "last.ckpt"


class RunsCode:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def eval_cfg(ckpt: object, out: Path, *extra: str):
    return compose_config(
        "eval",
        [
            f"ckpt_path={ckpt}",
            f"paths.output_dir={out}",
            "trainer.enable_progress_bar=false",
            "trainer.accelerator=cpu",
            *extra,
        ],
    )


def test_a_checkpoint_that_would_run_code_is_refused_unrun(trained: Path, tmp_path: Path) -> None:
    ckpt = torch.load(trained, weights_only=True)
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save(
        {**ckpt, "cifarlab_config": {**ckpt["cifarlab_config"], "x": RunsCode(marker)}}, evil
    )

    with pytest.raises(CifarlabError, match=f"ckpt_path={evil} is not a checkpoint"):
        evaluate(eval_cfg(evil, tmp_path / "eval"))
    with pytest.raises(CifarlabError, match=f"ckpt_path={evil} is not a checkpoint"):
        train(compose_config("train", [f"ckpt_path={evil}"]))
    assert not marker.exists() and not (tmp_path / "eval").exists()

    torch.load(evil, weights_only=False)  # the file is really dangerous without weights_only
    assert marker.exists()


def test_a_resumed_module_remembers_its_best_validation_accuracy(trained: Path) -> None:
    ckpt = torch.load(trained, weights_only=True)
    module = ClassifierModule(**ckpt["hyper_parameters"])
    module.on_load_checkpoint(ckpt)
    assert ckpt["val_acc_best"] > 0.5
    assert module.val_acc_best.compute() == ckpt["val_acc_best"]


def test_resume_refuses_foreign_checkpoints_and_changed_settings(
    trained: Path, tmp_path: Path
) -> None:
    run = trained.parents[1]
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    ckpt = torch.load(trained, weights_only=True)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({k: v for k, v in ckpt.items() if k != "cifarlab_config"}, foreign)
    with pytest.raises(CifarlabError, match=f"ckpt_path={foreign} holds no run config"):
        train(compose_config("train", [f"ckpt_path={foreign}"]))
    cfg = compose_config("train", [f"ckpt_path={trained}", "optimizer.lr=0.1"])
    with pytest.raises(CifarlabError, match="optimizer.lr=0.1 cannot apply"):
        resume_config(cfg, [f"ckpt_path={trained}", "optimizer.lr=0.1"])
    resumed = resume_config(cfg, [f"ckpt_path={trained}", "hydra.run.dir=x"])
    assert resumed.paths.output_dir == str(trained.parents[1])
    assert resumed.logger.tensorboard.purge_step == ckpt["global_step"]
    with pytest.raises(CifarlabError, match="ckpt_path=nowhere.ckpt does not exist"):
        train(compose_config("train", ["ckpt_path=nowhere.ckpt"]))
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not a checkpoint at all", "is not a checkpoint"),
        (None, "is not a cifarlab checkpoint"),
    ],
)
def test_eval_refuses_files_that_are_not_checkpoints(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    path = tmp_path / "model.ckpt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CifarlabError, match=f"ckpt_path={path} {needle}"):
        evaluate(eval_cfg(path, tmp_path / "eval"))
    with pytest.raises(CifarlabError, match=f"ckpt_path={tmp_path / 'gone.ckpt'} does not exist"):
        evaluate(eval_cfg(tmp_path / "gone.ckpt", tmp_path / "eval"))


def test_eval_refuses_a_checkpoint_for_other_classes(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(CifarlabError, match=r"trained on 3 classes .* gives 2 \(bird, cat\)"):
        evaluate(eval_cfg(trained, tmp_path / "eval", "data.classes=[bird,cat]"))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optimizer.name=adam"], "optimizer='adam' is not known; choose one of sgd, adamw"),
        (["optimizer.lr=0"], "optimizer.lr=0 must be a positive number"),
        (["optimizer=sgd", "optimizer.lr=-0.1"], "optimizer.lr=-0.1 must be a positive number"),
        (["data.batch_size=-4"], "data.batch_size=-4 must be a positive integer"),
        (["model=fc512", "model.width=0"], "model.width=0 must be a positive whole number"),
        (["model=bn_cnn", "model.width=1"], "model.width=1 does not fit bn_cnn"),
        (["data.classes=[bird,bird]"], r"data.classes lists \['bird'\] more than once"),
        (["data.val_size=120"], "data.val_size=120 leaves no training images"),
        (["model=resnet", "model.depth=50"], "model.depth=50 is not a ResNet"),
        (["batch_aug.cutout=-8"], "batch_aug.cutout=-8 must be a whole number"),
    ],
)
def test_bad_settings_stop_train_before_any_result_is_written(
    folder_root: Path, tmp_path: Path, overrides: list[str], needle: str
) -> None:
    with pytest.raises(CifarlabError, match=needle):
        train(train_cfg(folder_root, tmp_path / "run", *overrides))
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.json"))


def test_a_folder_without_images_is_named(tmp_path: Path) -> None:
    for name in ("bird", "cat"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "test" / name).mkdir(parents=True)
    (tmp_path / "train" / "bird" / "notes.txt").write_text("not an image")
    with pytest.raises(CifarlabError, match=f"No images .* found under {tmp_path / 'train'}"):
        load_split("folder", tmp_path, "train")


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    bad = root / "test" / "cat" / "0001.png"
    bad.write_bytes(b"\x89PNG but then nothing")
    with pytest.raises(CifarlabError, match=f"Cannot decode image {bad}"):
        load_split("folder", root, "test")


def test_a_corrupt_cache_is_rebuilt_not_served(tmp_path: Path) -> None:
    """Flipped bytes inside the image tensor load without complaint from torch.load."""
    root = make_folder(tmp_path / "d", n_train=5, n_test=3)
    good = load_split("folder", root, "test")
    path = cache_path("folder", root, "test")
    raw = bytearray(path.read_bytes())
    stored = bytes(good.images.flatten()[:64].tolist())
    start = raw.index(stored)
    raw[start : start + 64] = bytes(255 - b for b in stored)
    path.write_bytes(bytes(raw))
    assert not torch.equal(torch.load(path, weights_only=True)["images"], good.images)
    assert torch.equal(load_split("folder", root, "test").images, good.images)
    assert torch.equal(torch.load(path, weights_only=True)["images"], good.images)


@pytest.mark.slow
def test_sigterm_then_resume_through_train_py(folder_root: Path, tmp_path: Path) -> None:
    """The real entry point: a SIGTERM'd run exits 143 and one ckpt_path= finishes it."""
    run = tmp_path / "run"
    overrides = [o for o in quick_overrides(folder_root, run) if "output_dir" not in o]
    overrides += ["trainer.max_epochs=40", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-2000:]
    assert f"train.py ckpt_path={last}" in stderr and "Traceback" not in stderr
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"

    refused = run_script("train.py", f"ckpt_path={last}", "optimizer.lr=0.5", cwd=tmp_path)
    assert refused.returncode == 2 and "optimizer.lr=0.5" in refused.stderr
    assert "Traceback" not in refused.stderr

    record = tmp_path / "record"
    done = run_script("train.py", f"ckpt_path={last}", f"hydra.run.dir={record}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["status"] == "completed" and saved["epochs"] == 40
    assert sorted(p.name for p in record.iterdir()) == [".hydra", "train.log"]


@pytest.mark.slow
def test_eval_py_refuses_a_checkpoint_that_would_run_code(trained: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": RunsCode(marker), "hyper_parameters": {}}, evil)
    proc = run_script("eval.py", f"ckpt_path={evil}", f"hydra.run.dir={tmp_path}/e", cwd=tmp_path)
    assert proc.returncode == 2 and f"ckpt_path={evil}" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()
