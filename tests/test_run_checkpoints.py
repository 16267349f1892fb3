"""cifarlab.run.checkpoints: atomic writes, checkpoints that would run code are refused unrun, and
files that are not this version's checkpoints are named for what they are."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from cifarlab.errors import CifarlabError
from cifarlab.inference.export import export
from cifarlab.inference.predict import predict
from cifarlab.run.jobs import evaluate, train
from cifarlab.training.module import ClassifierModule

from .conftest import compose_config, eval_cfg, run_script, train_cfg
from .injected_callbacks import DiskFillsAfterFirstEpoch, target_of
from .os_helpers import file_size_limit


@pytest.fixture
def trained(trained_lenet: dict) -> Path:
    """The last.ckpt of a two-epoch LeNet run on the three-class folder data."""
    return Path(trained_lenet["last_ckpt"])


def test_a_checkpoint_the_disk_refuses_ends_the_run_in_one_paragraph(
    folder_root: Path, tmp_path: Path
) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    cfg = train_cfg(
        folder_root,
        tmp_path,
        "trainer.max_epochs=3",
        f"+callbacks.disk._target_={target_of(DiskFillsAfterFirstEpoch)}",
        f"+callbacks.disk.last_ckpt={last}",
    )
    with file_size_limit(), pytest.raises(CifarlabError) as failed:
        train(cfg)
    message = str(failed.value)
    assert message.startswith(f"Could not write {last.parent}/") and "File too large" in message
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the last completed epoch, intact
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "failed" and saved["last_ckpt"] == str(last)
    assert saved["message"] == f"{message} Continue from the last completed epoch: " + (
        f"train.py ckpt_path={last}"
    )
    assert not list(tmp_path.rglob("*.tmp"))


class RunsCode:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


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


@pytest.mark.slow
def test_eval_py_refuses_a_checkpoint_that_would_run_code(trained: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": RunsCode(marker), "hyper_parameters": {}}, evil)
    proc = run_script("eval.py", f"ckpt_path={evil}", f"hydra.run.dir={tmp_path}/e", cwd=tmp_path)
    assert proc.returncode == 2 and f"ckpt_path={evil}" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()


def with_stored(ckpt: dict, group: str, name: str, node: object) -> dict:
    """``ckpt`` whose stored run config has ``node`` as ``<group>.<name>``."""
    config = ckpt["cifarlab_config"]
    return {**ckpt, "cifarlab_config": {**config, group: {**config[group], name: node}}}


def test_a_stored_config_naming_foreign_code_is_refused_by_resume_and_run_by_nothing(
    trained: Path, tmp_path: Path
) -> None:
    ckpt = torch.load(trained, weights_only=True)
    marker = tmp_path / "code-ran"
    # Path(marker).touch(): code that Hydra's own target blocklist lets through
    touch = {"_target_": "pathlib.Path.touch", "_args_": [{"_target_": "pathlib.Path"}]}
    touch["_args_"][0]["_args_"] = [str(marker)]
    decoded = (  # the same, hidden in a string that only resolving the config turns into a node
        "${oc.decode:'{_target_: pathlib.Path.touch, _args_: [{_target_: pathlib.Path, "
        f"_args_: [{marker}]}}]}}'}}"
    )
    for name, node in (("foreign", touch), ("decoded", decoded)):
        evil = tmp_path / f"{name}.ckpt"
        torch.save(with_stored(ckpt, "callbacks", "progress_bar", node), evil)
        with pytest.raises(
            CifarlabError,
            match=f"ckpt_path={evil} cannot be resumed: its config builds "
            "callbacks.progress_bar from pathlib.Path.touch, which is none of the classes",
        ):
            # paths.output_dir: Hydra's new folder, where a checkpoint on its own goes on
            train(compose_config("train", [f"ckpt_path={evil}", f"paths.output_dir={tmp_path}"]))
        assert not marker.exists(), name
    # eval.py, predict.py and export.py build nothing from the stored config
    assert evaluate(eval_cfg(evil, tmp_path / "eval"))["status"] == "completed"
    assert not marker.exists()


@pytest.fixture(scope="module")
def other_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint that Lightning wrote for a module of another project."""

    class Regressor(BoringModel):
        def __init__(self, lr: float = 0.1, hidden: int = 32) -> None:
            super().__init__()
            self.save_hyperparameters()

    path = tmp_path_factory.mktemp("other") / "last.ckpt"
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Regressor())
    trainer.save_checkpoint(path)
    return path


def entry_points(ckpt: Path, tmp_path: Path) -> dict:
    """The job behind each entry point, called with ``ckpt``."""
    out = f"paths.output_dir={tmp_path / 'out'}"
    return {
        "eval.py": lambda: evaluate(eval_cfg(ckpt, tmp_path / "out")),
        "resume": lambda: train(compose_config("train", [f"ckpt_path={ckpt}", out])),
        "predict.py": lambda: predict(
            compose_config("predict", [f"ckpt_path={ckpt}", out, f"input={tmp_path}"])
        ),
        "export.py": lambda: export(compose_config("export", [f"ckpt_path={ckpt}", out])),
    }


def test_another_projects_checkpoint_is_named_by_every_entry_point(
    other_project: Path, tmp_path: Path
) -> None:
    for name, job in entry_points(other_project, tmp_path).items():
        with pytest.raises(CifarlabError) as refused:
            job()
        assert str(refused.value).startswith(
            f"ckpt_path={other_project} is not a cifarlab checkpoint: it is a Lightning "
            "checkpoint of another project: its hyper_parameters have no model/class_names "
            "(they hold lr, hidden)"
        ), name
    assert not (tmp_path / "out").exists()


def test_an_older_cifarlab_checkpoint_says_what_this_version_lacks(
    trained: Path, tmp_path: Path
) -> None:
    """As written before the two stock ModelCheckpoints: its config names a module since gone."""
    ckpt = torch.load(trained, weights_only=True)
    old = with_stored(
        ckpt,
        "callbacks",
        "model_checkpoint",
        {
            **ckpt["cifarlab_config"]["callbacks"]["model_checkpoint"],
            "_target_": "cifarlab.reliability.BestAndLastCheckpoint",
            "save_last": True,
        },
    )
    older = tmp_path / "older.ckpt"
    torch.save(old, older)
    with pytest.raises(
        CifarlabError,
        match=f"ckpt_path={older} cannot be resumed: its config builds callbacks.model_checkpoint "
        "from cifarlab.reliability.BestAndLastCheckpoint, .* another version of cifarlab wrote it",
    ):
        entry_points(older, tmp_path)["resume"]()

    renamed = {k.replace("net.features", "net.convs"): v for k, v in ckpt["state_dict"].items()}
    torch.save({**old, "state_dict": renamed}, older)
    for name, job in entry_points(older, tmp_path).items():
        if name == "resume":
            continue
        with pytest.raises(CifarlabError, match=f"ckpt_path={older}: its weights do not fit"):
            job()

    hparams = {**ckpt["hyper_parameters"], "augment": True}
    torch.save({**old, "hyper_parameters": hparams}, older)
    with pytest.raises(
        CifarlabError,
        match=f"ckpt_path={older} was written by another version of cifarlab: its "
        "hyper_parameters hold augment, which this version's ClassifierModule does not take",
    ):
        entry_points(older, tmp_path)["eval.py"]()
    assert not (tmp_path / "out").exists()
