"""The train and eval jobs: bad settings stop them before any result, bad checkpoints are refused,
and under DDP only rank 0 reports while every rank returns its metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from cifarlab.errors import CifarlabError
from cifarlab.run import records
from cifarlab.run.jobs import evaluate, train
from cifarlab.run.records import report_results

from .conftest import eval_cfg, train_cfg


class ReportOnEveryRank(L.Callback):
    """Calls report_results on each DDP rank with results of its own and keeps what it returns."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank = trainer.global_rank
        results = {
            "test/acc": 0.5 + rank / 4,
            "test/loss": 1.0 + rank,
            "test/acc_class/a": 0.25 + rank / 4,
            "test/acc_class/b": 0.75,
        }
        returned = report_results(
            trainer, self.out / "run", "t", results, ["a", "b"], {"rank": rank}
        )
        (self.out / f"returned{rank}.json").write_text(json.dumps(returned))


def test_only_rank_zero_writes_and_prints_but_every_rank_returns_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two forked CPU processes (gloo) with different results: rank 1 returns rank 0's metrics,
    and the table, the chart and metrics.json come from rank 0 alone."""
    calls = tmp_path / "calls.txt"

    def recorded(name: str, original):
        def call(*args, **kwargs):
            with open(calls, "a") as f:  # the forked workers inherit this patch
                f.write(f"{name} {os.getpid()}\n")
            return original(*args, **kwargs)

        return call

    for name in ("print_accuracy_table", "plot_per_class", "write_json"):
        monkeypatch.setattr(records, name, recorded(name, getattr(records, name)))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        callbacks=[ReportOnEveryRank(tmp_path)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_test_batches=1,
    )
    trainer.test(BoringModel(), verbose=False)
    returned = [json.loads((tmp_path / f"returned{rank}.json").read_text()) for rank in (0, 1)]
    assert returned[1] == returned[0] and returned[0]["rank"] == 0
    assert returned[0]["test/acc"] == 0.5 and returned[0]["test/acc_class"] == {
        "a": 0.25,
        "b": 0.75,
    }
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == returned[0]
    assert (tmp_path / "run" / "per_class_accuracy.png").is_file()
    lines = calls.read_text().split()
    names, pids = lines[::2], set(lines[1::2])
    assert sorted(names) == ["plot_per_class", "print_accuracy_table", "write_json"]
    assert len(pids) == 1  # one process did all three


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data.classes=[bird,bird]"], r"data.classes lists \['bird'\] more than once"),
        (["data.val_size=120"], "data.val_size=120 leaves no training images"),
    ],
)
def test_settings_the_data_cannot_take_stop_train_before_any_result_is_written(
    folder_root: Path, tmp_path: Path, overrides: list[str], needle: str
) -> None:
    with pytest.raises(CifarlabError, match=needle):
        train(train_cfg(folder_root, tmp_path / "run", *overrides))
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.json"))


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


def test_eval_refuses_a_checkpoint_for_other_classes(trained_lenet: dict, tmp_path: Path) -> None:
    with pytest.raises(CifarlabError, match=r"trained on 3 classes .* gives 2 \(bird, cat\)"):
        evaluate(eval_cfg(trained_lenet["last_ckpt"], tmp_path / "eval", "data.classes=[bird,cat]"))
