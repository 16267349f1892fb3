"""Tiny offline data sets in both on-disk formats, config composition as the entry points do it,
and the one way the tests run an entry point in a process of its own."""

from __future__ import annotations

import os

# Tiny models gain nothing from a second thread, and with two cores an OpenMP team per test process
# (pytest and the train.py subprocesses it starts) only makes them wait on each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pickle
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

import cifarlab  # noqa: F401 (the resolvers conf/hydra/default.yaml composes with)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
FOLDER_CLASSES = ("bird", "cat", "frog")


@pytest.fixture(autouse=True, scope="session")
def autograd_started_before_any_compile() -> None:
    """The first backward pass of a process sets up autograd's threads, once: after
    ``torch.compile`` has run in the process (tests/test_benchmarks.py), that set-up marks every
    process forked later as unable to run a backward pass, which a fork-based DDP test's workers
    must. One backward pass before any test keeps each test's outcome independent of the order
    the files run in."""
    import torch

    (torch.ones(1, requires_grad=True) * 2).sum().backward()


def class_images(label: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 32, 32, 3) uint8 images whose colour says their class, so a model can learn it."""
    base = np.zeros(3)
    base[label % 3] = 200.0
    base += 25.0 * (label // 3)
    noise = rng.normal(0, 30, size=(count, 32, 32, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_folder(root: Path, classes=FOLDER_CLASSES, n_train: int = 40, n_test: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, pixels in enumerate(class_images(label, count, rng)):
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def make_cifar10(root: Path, per_class_batch: int = 2, per_class_test: int = 3) -> Path:
    """torchvision's cifar-10-batches-py layout: five train pickles, one test pickle, meta."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(per_class: int) -> dict:
        labels = [c for c in range(10) for _ in range(per_class)]
        images = np.concatenate([class_images(c, per_class, rng) for c in range(10)])
        return {"data": images.transpose(0, 3, 1, 2).reshape(len(labels), -1), "labels": labels}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_class_batch), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(per_class_test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {
                "label_names": [
                    "airplane",
                    "automobile",
                    "bird",
                    "cat",
                    "deer",
                    "dog",
                    "frog",
                    "horse",
                    "ship",
                    "truck",
                ]
            },
            f,
        )
    return root


def make_cifar100(root: Path, per_class_train: int = 2, per_class_test: int = 1) -> Path:
    """torchvision's cifar-100-python layout: train and test pickles with fine and coarse labels
    (fine class f belongs to superclass f // 5 here), and meta with both label lists."""
    from cifarlab.data.cifar import CIFAR100_COARSE, CIFAR100_FINE

    rng = np.random.default_rng(2)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        fine = [c for c in range(100) for _ in range(per_class)]
        images = np.concatenate([class_images(c, per_class, rng) for c in range(100)])
        entry = {
            "data": images.transpose(0, 3, 1, 2).reshape(len(fine), -1),
            "fine_labels": fine,
            "coarse_labels": [c // 5 for c in fine],
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "meta", "wb") as f:
        names = {"fine_label_names": CIFAR100_FINE, "coarse_label_names": CIFAR100_COARSE}
        pickle.dump({k: list(v) for k, v in names.items()}, f)
    return root


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cifar10(tmp_path_factory.mktemp("cifar10"))


def compose_config(name: str, overrides: list[str], *, with_hydra: bool = False) -> DictConfig:
    """The config ``name`` (train, eval, predict, export) with ``overrides``, as its entry point
    composes it; ``with_hydra`` keeps Hydra's own node (launcher, sweeper, callbacks, run dirs)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=with_hydra)


def quick_overrides(root: Path, output_dir: Path, *extra: str) -> list[str]:
    """A run on the tiny folder data that finishes in seconds and prints no progress bar;
    ``extra`` overrides replace its value of a key or add keys."""
    quick = [
        "data.source=folder",
        f"data.root={root}",
        "data.val_size=24",
        "data.batch_size=16",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.enable_model_summary=false",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        f"paths.output_dir={output_dir}",
    ]
    replaced = {o.split("=", 1)[0] for o in extra}
    return [*[o for o in quick if o.split("=", 1)[0] not in replaced], *extra]


def train_cfg(root: Path, output_dir: Path, *extra: str) -> DictConfig:
    """The train config of a ``quick_overrides`` run."""
    return compose_config("train", quick_overrides(root, output_dir, *extra))


def eval_cfg(ckpt: object, output_dir: Path, *extra: str) -> DictConfig:
    """The eval config that tests checkpoint ``ckpt`` on the CPU into ``output_dir``, without a
    progress bar; ``extra`` overrides come last (e.g. ``trainer=ddp_cpu``)."""
    return compose_config(
        "eval",
        [
            f"ckpt_path={ckpt}",
            f"paths.output_dir={output_dir}",
            "trainer.enable_progress_bar=false",
            "trainer.accelerator=cpu",
            *extra,
        ],
    )


def sweep_overrides(root: Path, tmp_path: Path) -> list[str]:
    """``quick_overrides`` for a multirun, whose jobs get their directories from Hydra."""
    return [o for o in quick_overrides(root, tmp_path) if "output_dir" not in o]


ROOT = CONF_DIR.parent


def _default_ctrl_c() -> None:
    """In a new session's script, before it starts: Ctrl-C's default action (see run_script)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_script(
    script: str,
    *args: str,
    cwd: Path,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str, subprocess.Popen], None] | None = None,
    start_new_session: bool = False,
) -> subprocess.CompletedProcess:
    """Runs ``script`` (train.py, eval.py, predict.py or export.py, or a path) with ``args`` in a
    fresh process, as a user would, and returns its exit code, stdout and stderr.

    ``env`` adds variables to this process's environment. ``on_line(line, process)`` sees each
    line of stdout as the script prints it, so a test can signal the run at a moment it announces;
    ``start_new_session`` gives the script a process group of its own, which a terminal's Ctrl-C
    reaches as a whole (``os.killpg``), and Ctrl-C's default action, as a terminal gives the
    command it starts: a test run started as a background job (``nohup pytest &``) ignores Ctrl-C,
    and its scripts would inherit that. A script still running after ``timeout`` seconds is
    killed, with its whole process group when it has one, and raises
    ``subprocess.TimeoutExpired``.
    """
    command = [sys.executable, str(ROOT / script), *args]
    environment = {**os.environ, **(env or {})}
    if on_line is None:
        return subprocess.run(
            command,
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=start_new_session,
            preexec_fn=_default_ctrl_c if start_new_session else None,
        )
    # stderr goes to a file: a pipe nobody reads while stdout is read line by line could fill up
    with tempfile.TemporaryFile("w+") as stderr:
        with subprocess.Popen(
            command,
            cwd=cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=start_new_session,
            preexec_fn=_default_ctrl_c if start_new_session else None,
        ) as process:
            assert process.stdout is not None
            timed_out = threading.Event()

            def kill() -> None:  # the group too: workers left behind would hold stdout open
                timed_out.set()
                if start_new_session:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()

            watchdog = threading.Timer(timeout, kill)
            watchdog.start()
            lines = []
            try:
                for line in process.stdout:
                    lines.append(line)
                    on_line(line, process)
                process.wait()
            finally:
                watchdog.cancel()
        stderr.seek(0)
        stdout, errors = "".join(lines), stderr.read()
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(command, timeout, stdout, errors)
    return subprocess.CompletedProcess(command, process.returncode, stdout, errors)


@pytest.fixture(scope="session")
def trained_lenet(folder_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """metrics.json of a 2-epoch LeNet run on the tiny folder data (predict.py, export.py)."""
    from cifarlab.run.jobs import train

    output_dir = tmp_path_factory.mktemp("trained_lenet")
    return train(train_cfg(folder_root, output_dir, "model=lenet"))
