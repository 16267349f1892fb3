"""A real sweep, reviewed through a real TensorBoard server's HTTP data API.

One multirun runs a good job, a job whose lr makes the loss
non-finite and a job that fails with a user error; the sweep must finish, summarize all three and
serve every trained job's scalars, figures, image grids and hparams over localhost.
Slow (a subprocess sweep plus a server, about a minute on 2 cores): ``uv run pytest -m slow``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import FOLDER_CLASSES
from .figure_helpers import RUN_IMAGE_TAGS
from .sweep_helpers import DIVERGED, GOOD, check_summary, run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(folder_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return run_sweep(folder_root, tmp_path_factory.mktemp("sweep"))


def test_failing_and_diverging_jobs_do_not_stop_the_sweep(sweep: tuple[Path, str]) -> None:
    check_summary(*sweep)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoard:
    """A tensorboard server on 127.0.0.1 and a small client for its data API."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                str(logdir),
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
                "--load_fast=false",
                "--reload_interval=1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def raw(self, path: str, body: dict | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def get(self, path: str, body: dict | None = None) -> Any:
        return json.loads(self.raw(path, body))

    def wait_for(self, ready: Any, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("tensorboard did not serve the sweep in time")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def board(sweep: tuple[Path, str]) -> Iterator[TensorBoard]:
    server = TensorBoard(sweep[0])
    try:
        yield server
    finally:
        server.stop()


def run_of(runs: list[str], name: str) -> str:
    matches = [r for r in runs if r.endswith(f"/tensorboard/{name}")]
    assert len(matches) == 1, runs
    return matches[0]


def test_tensorboard_serves_every_jobs_review(board: TensorBoard) -> None:
    def loaded() -> bool:
        tags = board.get("/data/plugin/scalars/tags")
        good = [r for r in tags if GOOD in r and "test/acc" in tags[r]]
        return len(good) == 1 and any(DIVERGED in r for r in board.get("/data/runs"))

    board.wait_for(loaded)
    runs = board.get("/data/runs")
    # each job has its own directory, named by its swept override only; the diverging job stops
    # at its first non-finite loss (before any evaluation), so only the good one has test figures
    trained = [run_of(runs, GOOD)]
    diverged = run_of(runs, DIVERGED)
    scalar_tags = board.get("/data/plugin/scalars/tags")
    image_tags = board.get("/data/plugin/images/tags")
    for run in trained:
        for stage in ("val", "test"):
            assert {f"{stage}/acc_class/{c}" for c in FOLDER_CLASSES} <= set(scalar_tags[run])
        query = urllib.parse.urlencode({"run": run, "tag": "val/acc_class/cat"})
        points = board.get(f"/data/plugin/scalars/scalars?{query}")
        assert len(points) == 1 and 0.0 <= points[0][2] <= 1.0
        assert set(image_tags[run]) >= RUN_IMAGE_TAGS
        query = urllib.parse.urlencode({"run": run, "tag": "test/predictions", "sample": 0})
        (entry,) = board.get(f"/data/plugin/images/images?{query}")
        png = board.raw(f"/data/plugin/images/individualImage?{entry['query']}")
        assert png.startswith(b"\x89PNG") and len(png) > 5000

    assert "train/samples" in image_tags[diverged]

    layout = board.get("/data/plugin/custom_scalars/layout")
    charts = {c["title"]: c for cat in layout["category"] for c in cat["chart"]}
    assert charts["val"]["multiline"]["tag"] == ["^val/acc_class/"]

    experiment = board.get("/data/plugin/hparams/experiment", {"experimentName": ""})
    types = {h["name"]: h["type"] for h in experiment["hparamInfos"]}
    differs = {h["name"] for h in experiment["hparamInfos"] if h["differs"]}
    assert differs == {"lr"}, "the swept column is marked, so TensorBoard shows it first"
    assert types["lr"] == types["width"] == "DATA_TYPE_FLOAT64"
    assert types["model"] == types["classes"] == "DATA_TYPE_STRING"
    assert {m["name"]["tag"] for m in experiment["metricInfos"]} >= {"val/acc_best", "test/acc"}
    groups = board.get(
        "/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE"],
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 100,
        },
    )
    sessions = {g["name"]: g for g in groups["sessionGroups"]}
    metrics = {m["name"]["tag"]: m["value"] for m in sessions[trained[0]]["metricValues"]}
    assert sessions[trained[0]]["hparams"]["lr"] == pytest.approx(0.01)
    assert 0.0 <= metrics["val/acc_best"] <= 1.0 and 0.0 <= metrics["test/acc"] <= 1.0
    assert sessions[diverged]["hparams"]["lr"] == pytest.approx(1e6)
    assert not any("hp_metric" in m["name"]["tag"] for m in experiment["metricInfos"])
