"""cifarlab.run.run_folders: every process gets a folder of its own, and a folder that holds another
run is refused before anything is written into it."""

from __future__ import annotations

import pickle
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cifarlab.errors import CifarlabError
from cifarlab.run.run_folders import check_run_folder, check_sweep_folder

from .conftest import compose_config, run_script


def resolved_run_dirs(cwd: Path, processes: int) -> list[subprocess.CompletedProcess]:
    """train.py printing the folder it would write to, without running anything, in
    ``processes`` processes started together."""
    command = ("train.py", "--cfg", "all", "--resolve", "-p", "hydra.run.dir")
    with ThreadPoolExecutor(processes) as pool:
        started = [
            pool.submit(run_script, *command, cwd=cwd, timeout=120) for _ in range(processes)
        ]
        return [process.result() for process in started]


def test_processes_started_together_get_folders_of_their_own(tmp_path: Path) -> None:
    """``for lr in 0.1 0.01; do train.py optimizer.lr=$lr & done``: named to the second, both
    would write into one folder. (Sweep folders are named by the same resolver.)"""
    names = []
    for proc in resolved_run_dirs(tmp_path, 2):
        assert proc.returncode == 0, proc.stderr
        names.append(proc.stdout.strip().rsplit("/", 1)[-1])
    assert names[0] != names[1]
    stamp = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6}_[0-9a-f]{4}"
    assert all(re.fullmatch(stamp, name) for name in names), names
    assert not list(tmp_path.iterdir()), "resolving a name writes nothing"


def make_finished_run(run: Path) -> dict[Path, tuple[bytes, int]]:
    """A run folder as train.py leaves it; returns every file's bytes and mtime."""
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("model:\n  name: lenet\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (run / "metrics.json").write_text('{"status": "completed"}\n')
    return snapshot(run)


def snapshot(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {
        p: (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def test_an_explicit_folder_holding_another_run_is_refused_untouched(tmp_path: Path) -> None:
    run = tmp_path / "run"
    before = make_finished_run(run)
    proc = run_script("train.py", "model=lenet", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    message = " ".join(proc.stderr.split())
    assert f"hydra.run.dir={run} already holds another run" in message
    assert "metrics.json, checkpoints, .hydra" in message
    assert f"train.py ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in message
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_only_train_continuing_its_own_run_may_share_its_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_finished_run(run)
    last = str(run / "checkpoints" / "last.ckpt")
    check_run_folder(run, ckpt_path=last, resumes=True)  # train.py ckpt_path=<its own last.ckpt>
    for ckpt, resumes in ((last, False), (str(tmp_path / "other.ckpt"), True), (None, True)):
        with pytest.raises(CifarlabError, match="already holds another run"):
            check_run_folder(run, ckpt_path=ckpt, resumes=resumes)  # eval.py, another run's ckpt


def test_a_folder_is_claimed_so_a_second_process_starting_there_is_refused(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "same"
    check_run_folder(folder)
    assert (folder / ".hydra").is_dir()  # claimed before Hydra writes its record there
    with pytest.raises(CifarlabError, match=r"already holds another run \(\.hydra\)"):
        check_run_folder(folder)


def test_ranks_of_one_launch_share_their_folder(tmp_path: Path) -> None:
    """Script-launched ddp and SLURM tasks run train.py once per rank, all into rank 0's folder;
    rank 0 under a launcher cannot tell another run's .hydra from its own ranks', so there only
    results count."""
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    check_run_folder(folder, rank=1)
    check_run_folder(folder, rank=0)
    (folder / "metrics.json").write_text("{}")
    check_run_folder(folder, rank=1)
    with pytest.raises(CifarlabError, match=r"\(metrics.json\)"):
        check_run_folder(folder, rank=0)


def test_a_sweep_folder_holding_another_sweep_is_refused(tmp_path: Path) -> None:
    check_sweep_folder(tmp_path / "new")
    (tmp_path / "old" / "0" / ".hydra").mkdir(parents=True)
    with pytest.raises(CifarlabError, match=r"already holds another sweep \(0\)"):
        check_sweep_folder(tmp_path / "old")
    (tmp_path / "old" / "multirun.yaml").write_text("hydra: {}\n")
    with pytest.raises(CifarlabError, match=r"\(multirun.yaml, 0\).*summary.md"):
        check_sweep_folder(tmp_path / "old")


def test_a_config_keeps_its_folder_name_wherever_it_is_resolved() -> None:
    """Hydra resolves the folder many times, and in launcher workers from a pickled copy of the
    config; every resolution must give the same name, and another config another one."""
    first, second = (compose_config("train", [], with_hydra=True) for _ in range(2))
    name = first.hydra.sweep.dir
    assert (
        first.hydra.sweep.dir == name and pickle.loads(pickle.dumps(first)).hydra.sweep.dir == name
    )
    assert second.hydra.sweep.dir != name
    assert first.hydra.run.dir.rsplit("/", 1)[-1] == name.rsplit("/", 1)[-1]
