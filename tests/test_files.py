"""cifarlab.files.write_atomic: every file cifarlab writes is the old one or the new one, a write
the disk refuses is one paragraph, and a killed writer's temporary file does not stay behind."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifarlab.files import FileWriteError, save_torch, temp_path, write_atomic, write_json

from .os_helpers import dead_pid, file_size_limit, limit_file_size


def test_a_write_the_disk_refuses_names_the_path_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    write_atomic(target, lambda tmp: save_torch({"step": torch.tensor(1)}, tmp))
    with file_size_limit():
        limit_file_size(4096)
        with pytest.raises(FileWriteError) as refused:
            write_atomic(target, lambda tmp: save_torch({"w": torch.zeros(10_000)}, tmp))
    message = str(refused.value)
    assert message.startswith(f"Could not write {target}: File too large.")
    assert "The previous last.ckpt is unchanged" in message
    assert torch.load(target, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # and no temporary file
    assert str(pickle.loads(pickle.dumps(refused.value))) == message  # joblib sends it back

    beside_a_file = tmp_path / "last.ckpt" / "metrics.json"  # a folder that cannot exist
    named = re.escape(f"{beside_a_file}: File exists ({beside_a_file.parent})")
    with pytest.raises(FileWriteError, match=named):
        write_json(beside_a_file, {"status": "completed"})
    (tmp_path / "metrics.json").mkdir()
    with pytest.raises(FileWriteError, match=f"{tmp_path / 'metrics.json'}: Is a directory"):
        write_json(tmp_path / "metrics.json", {"status": "completed"})


def test_a_killed_writers_temp_file_goes_at_the_next_write_of_its_target(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")
    stale = temp_path(target, pid=dead_pid())
    stale.write_bytes(b"half of a file")
    live = temp_path(target, pid=os.getppid())  # a process that is running: still writing
    live.write_bytes(b"being written")
    other_target = temp_path(tmp_path / "metrics.json.bak", pid=dead_pid())
    other_target.write_bytes(b"another file's")

    write_atomic(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"
    assert not stale.exists() and live.exists() and other_target.exists()


WRITER = """
import sys, time
from pathlib import Path
from cifarlab.files import write_atomic

def write(tmp):
    with open(tmp, "wb") as f:
        f.write(b"x" * 1_000_000)
        f.flush()
        print(tmp, flush=True)
        time.sleep(60)

write_atomic(Path(sys.argv[1]), write)
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_and_its_temp_goes_next_time(
    tmp_path: Path,
) -> None:
    target = tmp_path / "cifarlab-train-v3.pt"
    target.write_bytes(b"the old cache")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    tmp = Path(proc.stdout.readline().strip())  # the temp file exists and is half written
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert tmp.stat().st_size == 1_000_000 and target.read_bytes() == b"the old cache"

    write_atomic(target, lambda path: path.write_bytes(b"the new cache"))
    assert target.read_bytes() == b"the new cache"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
