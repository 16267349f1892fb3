"""cifarlab.run.resume and the interrupts it continues: an interrupted run resumes to the same
result, also on another machine or with the same command; what may change on resume; last.ckpt every
epoch."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifarlab.errors import CifarlabError
from cifarlab.run import loggers
from cifarlab.run.checkpoints import CONFIG_KEY, AtomicCheckpointIO
from cifarlab.run.jobs import train
from cifarlab.run.resume import CONF_TARGETS, EARLIER_TARGETS, resume_config
from cifarlab.training.module import ClassifierModule

from .conftest import CONF_DIR, compose_config, quick_overrides, run_script, train_cfg
from .injected_callbacks import READY, HoldBeforeSecondEpoch, target_of

RESUME_RUN = [
    "data.source=cifar10",
    "data.val_size=30",
    "model=bn_cnn",
    "model.width=8",
    "model.dropout=0.5",  # dropout draws from torch's generator: resume must restore its state
    "optimizer.lr=1e-3",
    "data.batch_size=8",  # 8 steps an epoch, so that a later epoch improves on epoch 0
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    # the batch augmentations' draws must continue exactly too
    "batch_aug.cutout=4",
    "batch_aug.mixup_alpha=0.1",
    "batch_aug.cutmix_alpha=0.1",
]


def test_resume_takes_its_own_command_and_setup_keys_and_refuses_other_changes(
    folder_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    command = quick_overrides(folder_root, run, "trainer.max_epochs=1", "model.width=4")
    train(compose_config("train", command))
    last = run / "checkpoints" / "last.ckpt"

    same = [*command, f"ckpt_path={last}"]  # the natural resume: the same command plus ckpt_path
    assert resume_config(compose_config("train", same), same).paths.output_dir == str(run)

    for changed in ("optimizer.lr=0.5", "model.width=8", "trainer.max_epochs=3", "model=fc512"):
        refused = [*same, changed]
        with pytest.raises(CifarlabError, match=f"{changed} cannot apply"):
            resume_config(compose_config("train", refused), refused)

    # the run and its data moved to another machine, which runs it on its one device
    moved, data = tmp_path / "elsewhere" / "run", tmp_path / "elsewhere" / "data"
    shutil.copytree(run, moved)
    shutil.copytree(folder_root, data)
    relocated = [
        *quick_overrides(folder_root, moved, f"data.root={data}", "trainer.devices=1"),
        "trainer.max_epochs=1",
        "model.width=4",
        f"ckpt_path={moved / 'checkpoints' / 'last.ckpt'}",
    ]
    resumed = resume_config(compose_config("train", relocated), relocated)
    assert resumed.paths.output_dir == str(moved) and resumed.data.root == str(data)
    assert resumed.trainer.default_root_dir == str(moved)
    assert resumed.callbacks.last_checkpoint.dirpath == str(moved / "checkpoints")
    assert resumed.logger.tensorboard.save_dir == str(moved)
    assert resumed.model.width == 4 and resumed.trainer.max_epochs == 1


def resumed(ckpt: Path, new_folder: Path, *extra: str) -> DictConfig:
    """resume_config for ``train.py ckpt_path=<ckpt> <extra>`` whose new Hydra run folder is
    ``new_folder``, where a checkpoint kept outside a run folder goes on."""
    given = [f"ckpt_path={ckpt}", *extra]
    return resume_config(compose_config("train", [*given, f"paths.output_dir={new_folder}"]), given)


def test_a_checkpoint_outside_its_run_folder_never_resumes_into_that_folder(
    folder_root: Path, tmp_path: Path
) -> None:
    """The folder a checkpoint's config names may hold the run a copy was made from: a copied run
    goes on in the copy, a checkpoint kept on its own in the command's new folder."""
    run, copy, fresh = tmp_path / "run", tmp_path / "copy", tmp_path / "fresh"
    command = quick_overrides(folder_root, run, "trainer.max_epochs=1", "model.width=4")
    train(compose_config("train", command))
    shutil.copytree(run, copy)
    (tmp_path / "kept").mkdir()
    loose = Path(shutil.copy(run / "checkpoints" / "last.ckpt", tmp_path / "kept" / "last.ckpt"))
    for ckpt, folder in ((copy / "checkpoints" / "last.ckpt", copy), (loose, fresh)):
        config = resumed(ckpt, fresh)
        assert config.paths.output_dir == str(folder)
        assert config.callbacks.last_checkpoint.dirpath == str(folder / "checkpoints")
        assert config.logger.tensorboard.save_dir == str(folder)


@pytest.mark.slow
def test_a_moved_run_resumes_through_train_py_where_it_now_is(
    folder_root: Path, tmp_path: Path
) -> None:
    run, moved = tmp_path / "run", tmp_path / "moved"
    command = quick_overrides(folder_root, run, "trainer.max_epochs=2")
    train(train_cfg(folder_root, run, "trainer.max_epochs=1"))
    shutil.copytree(run, moved)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    proc = run_script(
        "train.py",
        *[o.replace(str(run), str(moved)) for o in command if "max_epochs" not in o],
        "trainer.max_epochs=1",
        f"ckpt_path={moved / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'record'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((moved / "metrics.json").read_text())["status"] == "completed"
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_a_resumed_sweep_job_logs_into_its_own_tensorboard_folder(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a sweep a job's TensorBoard folder is named by its overrides; resumed as a single run,
    the job must go on logging (and purge) there, not in the sweep job's parent folder."""
    name = "optimizer.lr=0.01"
    monkeypatch.setattr(loggers, "job_name", lambda: name)
    stop_during(monkeypatch, epoch=1, batch=1, stop=keyboard_interrupt)
    with pytest.raises(SystemExit):
        train(train_cfg(folder_root, tmp_path, "trainer.max_epochs=3"))
    monkeypatch.undo()  # the resumed run is not in a multirun
    train(compose_config("train", [f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"]))
    board = tmp_path / "tensorboard"
    folders = {p.parent.relative_to(board) for p in board.rglob("events.out.tfevents*")}
    assert folders == {Path(name)}
    events = EventAccumulator(str(board / name))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert len(steps) == 3 and len(set(steps)) == 3  # one point per epoch, none twice


def saved_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The file names every checkpoint write goes to, in order."""
    names: list[str] = []
    atomic_save = AtomicCheckpointIO.save_checkpoint

    def recording_save(self, checkpoint, path, storage_options=None):
        names.append(Path(path).name)
        atomic_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording_save)
    return names


@pytest.mark.parametrize("validation", ["data.val_size=24", "data.val_size=0"])
def test_last_ckpt_holds_every_epoch_improved_or_not_and_without_validation(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validation: str
) -> None:
    """The tiny task peaks at epoch 0, so epochs 1 and 2 improve nothing."""
    names = saved_names(monkeypatch)
    metrics = train(train_cfg(folder_root, tmp_path, validation, "trainer.max_epochs=3"))
    assert names.count("last.ckpt") == 3
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert metrics["last_ckpt"] == str(tmp_path / "checkpoints" / "last.ckpt")
    if validation.endswith("=0"):
        assert metrics["val/acc_best"] is None and metrics["status"] == "completed"


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


@pytest.mark.slow  # 13-52 s; moved out of the default suite to keep it under 5 minutes
def test_interrupted_run_resumes_to_the_same_result(
    cifar10_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = train(train_cfg(cifar10_root, tmp_path / "whole", *RESUME_RUN))
    # the best checkpoint comes from an epoch the resumed run trains again
    assert not whole["best_ckpt"].startswith(str(tmp_path / "whole/checkpoints/epoch000"))
    assert whole["epochs"] == 3

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
    saved_through = saved_names(monkeypatch)
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


def test_resume_refuses_foreign_checkpoints_and_changed_settings(
    trained_lenet: dict, tmp_path: Path
) -> None:
    trained = Path(trained_lenet["last_ckpt"])
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


def test_a_stored_config_may_name_the_classes_of_conf_and_of_the_command_line(
    trained_lenet: dict, tmp_path: Path
) -> None:
    """conf/ names the same classes as CONF_TARGETS; a class of the user's own resumes once the
    command line names it for the same node again, and only then."""
    named = set()
    for path in CONF_DIR.rglob("*.yaml"):
        if path.relative_to(CONF_DIR).parts[0] != "hydra":  # Hydra's own, never in a run config
            named |= set(re.findall(r"^\s*_target_:\s*(\S+)", path.read_text(), re.M))
    assert named == CONF_TARGETS

    ckpt = torch.load(trained_lenet["last_ckpt"], weights_only=True)
    config = ckpt["cifarlab_config"]
    mine = {"_target_": target_of(HoldBeforeSecondEpoch), "marker": "held"}
    extended = tmp_path / "extended.ckpt"
    torch.save(
        {**ckpt, "cifarlab_config": {**config, "callbacks": {**config["callbacks"], "hold": mine}}},
        extended,
    )
    trusted = resumed(extended, tmp_path / "new", "+callbacks.hold._target_=" + mine["_target_"])
    assert trusted.callbacks.hold == mine
    with pytest.raises(
        CifarlabError,
        match=rf"builds callbacks.hold from {mine['_target_']}, .* on the command line as well: "
        rf"\+callbacks.hold._target_={mine['_target_']}$",
    ):
        resumed(extended, tmp_path / "new")


def test_a_checkpoint_naming_the_earlier_targets_resumes_with_their_names_now(
    trained_lenet: dict, tmp_path: Path
) -> None:
    """A checkpoint of an earlier version stores the _target_s its modules had then; resuming it
    builds the same classes, by the names they have now."""
    ckpt = torch.load(trained_lenet["last_ckpt"], weights_only=True)
    config = ckpt["cifarlab_config"]
    now = {v: k for k, v in EARLIER_TARGETS.items()}
    callbacks = {
        name: {**node, "_target_": now.get(node["_target_"], node["_target_"])}
        for name, node in config["callbacks"].items()
        if node
    }
    assert callbacks["curves"]["_target_"] == "cifarlab.curves.EpochCurves"
    earlier = tmp_path / "earlier.ckpt"
    torch.save({**ckpt, "cifarlab_config": {**config, "callbacks": callbacks}}, earlier)
    targets = {
        name: node._target_ for name, node in resumed(earlier, tmp_path / "new").callbacks.items()
    }
    assert targets["curves"] == "cifarlab.callbacks.curves.EpochCurves"
    assert targets == {name: node["_target_"] for name, node in config["callbacks"].items() if node}


def test_a_checkpoint_storing_the_earlier_hardware_keys_resumes_with_them(
    trained_lenet: dict, tmp_path: Path
) -> None:
    """Earlier versions stored the hardware settings under trainer; resuming such a checkpoint
    moves them to hardware.*, where the Trainer does not see them."""
    ckpt = torch.load(trained_lenet["last_ckpt"], weights_only=True)
    config = ckpt["cifarlab_config"]
    hardware = dict(config["hardware"])
    earlier_config = {k: v for k, v in config.items() if k != "hardware"}
    earlier_config["trainer"] = {**config["trainer"], **hardware}
    earlier = tmp_path / "earlier.ckpt"
    torch.save({**ckpt, "cifarlab_config": earlier_config}, earlier)
    config = resumed(earlier, tmp_path / "new")
    assert OmegaConf.to_container(config.hardware) == hardware
    assert not set(hardware) & set(config.trainer)


@pytest.mark.slow
def test_sigterm_then_resume_through_train_py(folder_root: Path, tmp_path: Path) -> None:
    """The real entry point: a SIGTERM'd run exits 143 and one ckpt_path= finishes it."""
    run = tmp_path / "run"
    hold = f"+callbacks.hold._target_={target_of(HoldBeforeSecondEpoch)}"

    def stop_when_held(line: str, process: subprocess.Popen) -> None:
        if line.strip() == READY:
            process.send_signal(signal.SIGTERM)

    proc = run_script(
        "train.py",
        *[o for o in quick_overrides(folder_root, run) if "output_dir" not in o],
        "trainer.max_epochs=3",
        f"hydra.run.dir={run}",
        hold,
        f"+callbacks.hold.marker={tmp_path / 'held'}",
        cwd=tmp_path,
        on_line=stop_when_held,
    )
    stderr = proc.stderr
    last = run / "checkpoints" / "last.ckpt"
    assert proc.returncode == 143, stderr[-2000:]
    assert f"train.py ckpt_path={last}" in stderr and "Traceback" not in stderr
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    assert torch.load(last, weights_only=True)["epoch"] == 0

    refused = run_script("train.py", f"ckpt_path={last}", "optimizer.lr=0.5", cwd=tmp_path)
    assert refused.returncode == 2 and "optimizer.lr=0.5" in refused.stderr
    assert "Traceback" not in refused.stderr

    record = tmp_path / "record"
    # the command line names the class again, so the checkpoint's config may build it
    done = run_script(
        "train.py", f"ckpt_path={last}", hold, f"hydra.run.dir={record}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["status"] == "completed" and saved["epochs"] == 3
    # the resume command's own record; its results go on in the run's folder
    recorded = {p.name for p in record.iterdir()} - {"git_diff.patch"}  # where the tree is dirty
    assert recorded == {".hydra", "provenance.json", "train.log"}


@pytest.mark.parametrize("written_by", ["another grouping", "another scheduler class"])
def test_a_training_state_of_another_version_is_named_not_crashed_on(
    trained_lenet: dict, folder_root: Path, tmp_path: Path, written_by: str
) -> None:
    ckpt = torch.load(trained_lenet["last_ckpt"], weights_only=True)
    # the run is moved here, so that nothing is written into the shared fixture's folder
    moved = json.dumps(ckpt[CONFIG_KEY]).replace(trained_lenet["output_dir"], str(tmp_path))
    ckpt[CONFIG_KEY] = json.loads(moved)
    if written_by == "another grouping":  # e.g. fastnet's whitening bias before its own group
        groups = ckpt["optimizer_states"][0]["param_groups"]
        groups[0]["params"] = groups[0]["params"] + groups.pop(1)["params"]
    else:  # e.g. OneCycleLR's state where this version keeps a LambdaLR
        ckpt["lr_schedulers"][0].pop("lr_lambdas")
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.raises(CifarlabError, match="cannot be resumed by this version") as refused:
        train(compose_config("train", [f"ckpt_path={old}"]))
    assert "eval.py" in str(refused.value)
