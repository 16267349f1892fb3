"""cifarlab.run.provenance: every run folder and checkpoint says what produced it."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from cifarlab.run.jobs import evaluate
from cifarlab.run.provenance import (
    CHECKPOINT_KEY,
    DIFF_FILE,
    PROVENANCE_FILE,
    SOURCE_DIR,
    git_state,
    write_provenance,
)

from .conftest import eval_cfg

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git checkout with one commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "model.py").write_text("width = 8\n")
    git(repo, "add", "model.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return repo


@needs_git
def test_a_dirty_tree_is_recorded_with_its_diff(repo: Path, tmp_path: Path) -> None:
    commit = git(repo, "rev-parse", "HEAD").strip()
    assert git_state(repo) == ({"git_commit": commit, "git_dirty": False}, "")

    (repo / "model.py").write_text("width = 16\n")
    (repo / "notes.py").write_text("# not committed\n")
    state, diff = git_state(repo / ".")
    assert state == {"git_commit": commit, "git_dirty": True}
    assert "-width = 8\n+width = 16" in diff and "#   notes.py" in diff

    run = tmp_path / "run"
    write_provenance(run, {**state, "started": "t0", "command": ["train.py"]}, diff)
    saved = json.loads((run / PROVENANCE_FILE).read_text())
    assert saved["git_dirty"] is True and saved["git_diff_file"] == DIFF_FILE
    assert (run / DIFF_FILE).read_text() == diff


def test_without_git_the_record_says_why(tmp_path: Path) -> None:
    state, diff = git_state(tmp_path, git=str(tmp_path / "no-such-git"))
    assert state["git_commit"].startswith("unknown (git not found") and diff == ""
    assert state["git_dirty"] is None
    if shutil.which("git"):
        outside = tmp_path / "plain"
        outside.mkdir()
        state, _ = git_state(outside)
        assert state == {"git_commit": "unknown (not a git checkout)", "git_dirty": None}


def test_a_resumed_run_in_its_own_folder_keeps_its_earlier_starts(tmp_path: Path) -> None:
    first = {"git_commit": "a" * 40, "git_dirty": True, "started": "t0", "command": ["x"]}
    write_provenance(tmp_path, first, "diff one")
    write_provenance(tmp_path, first, "diff one")  # the test stage of the same start
    second = {"git_commit": "b" * 40, "git_dirty": True, "started": "t1", "command": ["x"]}
    write_provenance(tmp_path, second, "diff two")
    saved = json.loads((tmp_path / PROVENANCE_FILE).read_text())
    assert saved["git_commit"] == "b" * 40 and saved["git_diff_file"] == "git_diff.2.patch"
    assert [e["git_commit"] for e in saved["earlier"]] == ["a" * 40]
    assert (tmp_path / saved["earlier"][0]["git_diff_file"]).read_text() == "diff one"
    assert (tmp_path / "git_diff.2.patch").read_text() == "diff two"


def test_a_run_folder_and_its_checkpoints_say_what_produced_them(trained_lenet: dict) -> None:
    run = Path(trained_lenet["output_dir"])
    saved = json.loads((run / PROVENANCE_FILE).read_text())
    state, diff = git_state(SOURCE_DIR)
    assert {k: saved[k] for k in state} == state
    assert (run / DIFF_FILE).is_file() == bool(diff)
    assert saved["versions"] == {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "hydra": saved["versions"]["hydra"],
    }
    assert saved["command"] == sys.argv and saved["device"].startswith("CPU: ")
    for ckpt in (trained_lenet["best_ckpt"], trained_lenet["last_ckpt"]):
        record = torch.load(ckpt, weights_only=True)[CHECKPOINT_KEY]
        assert record == {k: v for k, v in saved.items() if k not in ("git_diff_file", "earlier")}


def test_eval_shows_the_commit_of_a_checkpoint_from_a_dirty_tree(
    trained_lenet: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = torch.load(trained_lenet["best_ckpt"], weights_only=True)
    ckpt[CHECKPOINT_KEY] |= {"git_commit": "f" * 40, "git_dirty": True}
    dirty = tmp_path / "dirty.ckpt"
    torch.save(ckpt, dirty)
    metrics = evaluate(eval_cfg(dirty, tmp_path / "eval"))
    assert f"trained at commit {'f' * 40} (dirty)" in capsys.readouterr().out
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["ckpt_commit"] == metrics["ckpt_commit"] == "f" * 40 and saved["ckpt_dirty"]
    assert json.loads((tmp_path / "eval" / PROVENANCE_FILE).read_text())["command"] == sys.argv
