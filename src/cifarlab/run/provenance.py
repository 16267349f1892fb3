"""What produced a run: the project's git commit and whether its tree had uncommitted changes, the
versions of Python, torch, Lightning and Hydra, the device and the command line.

A result is only worth what one can say about how it was made. Every run folder gets
``provenance.json`` (with ``git_diff.patch`` beside it when the tree had uncommitted changes), and
every checkpoint the same record under ``cifarlab_provenance`` as plain data (``weights_only=True``
loads it; cifarlab.callbacks.provenance writes both for a training run). Recording never fails a
run: where git is missing or the code is not a git checkout, the record says so instead of a commit.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cifarlab.files import write_atomic, write_json
from cifarlab.utils import log

# git finds the checkout this code runs from (uv installs the project editable, from src/)
SOURCE_DIR = Path(__file__).resolve().parent
PROVENANCE_FILE = "provenance.json"
DIFF_FILE = "git_diff.patch"
CHECKPOINT_KEY = "cifarlab_provenance"
COMMAND_TIMEOUT_S = 10
DISTRIBUTIONS = {"lightning": "lightning", "hydra": "hydra-core"}


class _GitFailed(Exception):
    pass


def _git(folder: Path, git: str, *args: str) -> str:
    # no optional locks: runs of a sweep ask at the same time, and a status that refreshed the
    # index would take its lock
    result = subprocess.run(
        [git, "-C", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        check=False,
    )
    if result.returncode != 0:
        raise _GitFailed(result.stderr.strip() or f"exit code {result.returncode}")
    return result.stdout


def git_state(folder: Path = SOURCE_DIR, git: str = "git") -> tuple[dict[str, Any], str]:
    """The commit of the git checkout that holds ``folder`` and whether its tree had uncommitted
    changes (untracked files count), and the diff of those changes ("" for a clean tree).

    ``git`` is the executable to run. Without a commit to name, ``git_commit`` says why (git not
    found, not a git checkout, git failed) and ``git_dirty`` is None.
    """
    try:
        commit = _git(folder, git, "rev-parse", "HEAD").strip()
        status = _git(folder, git, "status", "--porcelain")
        diff = _git(folder, git, "diff", "--no-color", "--no-ext-diff", "HEAD") if status else ""
    except FileNotFoundError:
        return {"git_commit": f"unknown (git not found: {git})", "git_dirty": None}, ""
    except subprocess.TimeoutExpired:
        slow = f"unknown (git took over {COMMAND_TIMEOUT_S} s)"
        return {"git_commit": slow, "git_dirty": None}, ""
    except _GitFailed as err:
        why = "not a git checkout" if "not a git repository" in str(err) else f"git failed: {err}"
        return {"git_commit": f"unknown ({why.splitlines()[0]})", "git_dirty": None}, ""
    untracked = [line[3:] for line in status.splitlines() if line.startswith("?? ")]
    if untracked:
        listed = "".join(f"#   {name}\n" for name in untracked)
        diff = f"# untracked files (not in the diff below):\n{listed}{diff}"
    return {"git_commit": commit, "git_dirty": bool(status)}, diff


def versions() -> dict[str, str]:
    """Python's, torch's (with its build, e.g. ``+cu132``), Lightning's and Hydra's versions."""
    import torch

    # str(): torch's TorchVersion would not load with weights_only=True from a checkpoint
    found = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for name, distribution in DISTRIBUTIONS.items():
        try:
            found[name] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def cpu_model() -> str:
    if sys.platform == "linux":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    elif sys.platform == "darwin":
        try:
            found = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            ).stdout.strip()
            if found:
                return found
        except (OSError, subprocess.TimeoutExpired):
            pass
    return platform.processor() or platform.machine() or "unknown"


def describe_device(device: Any) -> str:
    """A device as people name it: ``CUDA: NVIDIA H200``, ``Apple MPS: Apple M2``, ``CPU: <model>``.

    ``device``: a ``torch.device``, or a name (``cpu``, ``cuda:1``, ``mps``, and ``auto``/``gpu``
    as Lightning and predict.py pick them). CUDA is asked for a name only when the device is a
    CUDA one, where CUDA is in use anyway.
    """
    import torch

    kind = str(device)
    if kind in ("auto", "gpu"):
        if torch.cuda.is_available():
            kind = "cuda"
        elif torch.backends.mps.is_available():
            kind = "mps"
        elif kind == "auto":
            kind = "cpu"
    try:
        if kind.startswith("cuda"):
            index = torch.device(kind).index
            index = torch.cuda.current_device() if index is None else index
            return f"CUDA: {torch.cuda.get_device_name(index)}"
    except (RuntimeError, AssertionError) as err:
        return f"{kind} ({err})"
    if kind.startswith("mps"):
        return f"Apple MPS: {cpu_model()}"
    return f"CPU: {cpu_model()}" if kind == "cpu" else kind


def collect(source_dir: Path = SOURCE_DIR, git: str = "git") -> tuple[dict[str, Any], str]:
    """This process's record without its device (known once the device is chosen), and the diff."""
    state, diff = git_state(source_dir, git)
    record = {
        **state,
        "versions": versions(),
        "command": list(sys.argv),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    return record, diff


def write_provenance(folder: Path, record: Mapping[str, Any], diff: str) -> None:
    """Writes ``record`` to ``folder``/provenance.json, and the diff beside it when there is one.

    A run that goes on in its own folder (a resume with ``hydra.run.dir`` of that run) keeps the
    records of its earlier starts under ``earlier``, each diff under its own name.
    """
    folder = Path(folder)
    path = folder / PROVENANCE_FILE
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        old = {}
    earlier = old.pop("earlier", [])
    if old and (old.get("started"), old.get("command")) != (record["started"], record["command"]):
        earlier.append(old)  # another start of this run; a second stage of this one rewrites
    diff_file = None
    if diff:
        taken = {e.get("git_diff_file") for e in earlier}
        names = (DIFF_FILE, *(f"git_diff.{n}.patch" for n in range(2, len(earlier) + 3)))
        diff_file = next(name for name in names if name not in taken)
        write_atomic(folder / diff_file, lambda tmp: tmp.write_text(diff))
    write_json(path, {**record, "git_diff_file": diff_file, "earlier": earlier})


def describe_commit(record: Mapping[str, Any], short: bool = False) -> str:
    """``f9a2904c...``, with ``(dirty)`` when the tree had uncommitted changes; ``short`` keeps 12
    characters of the hash."""
    commit = str(record.get("git_commit") or "unknown (not recorded)")
    if short and not commit.startswith("unknown"):
        commit = commit[:12]
    return f"{commit} (dirty)" if record.get("git_dirty") else commit


def own_folder(cfg: DictConfig) -> Path:
    """The folder of this process: Hydra's run folder, which for a resumed run is the resume
    command's own (the run goes on writing results in its original folder, whose provenance.json
    stays that of its first start); ``paths.output_dir`` where Hydra is not running."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def record_run(folder: Path, device: Any, source_dir: Path = SOURCE_DIR) -> None:
    """Writes this process's provenance into its run folder (predict.py, export.py, lr_find).

    Never raises: the record must not cost the run; a failure is logged instead.
    """
    try:
        record, diff = collect(source_dir)
        write_provenance(folder, {**record, "device": describe_device(device)}, diff)
    except Exception as err:  # anything at all: the run goes on
        log.warning("Could not record the run's provenance in %s: %s", folder, err)
