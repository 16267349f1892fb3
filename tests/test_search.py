"""Hyperparameter search (cifarlab.search): the space from YAML, trials told and tabled, workers
sharing one study, continuing it, dead workers' trials, seeds, and pruning a real fit.

Searches run cifarlab.search.Search with a stand-in launcher (no Hydra, no training), or
tests/search_worker.py's stand-in job through Hydra (in this process, or as two worker
processes); one test trains for real to be pruned.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.plugins.launcher import Launcher
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from tensorboard.plugins.hparams import plugin_data_pb2

import train
from cifarlab.errors import CifarlabError
from cifarlab.hparams_tab import hparams_summaries
from cifarlab.search import HEARTBEAT, Search, open_storage, override, search_space, trial_id

from . import search_worker
from .conftest import CONF_DIR, sweep_overrides

STUDY = "lr_width"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def train_app(cfg: DictConfig) -> float | None:
    """train.py's own main, on the configs by absolute path so it runs from this process."""
    return train.main.__wrapped__(cfg)


def run_search(
    monkeypatch: pytest.MonkeyPatch,
    sweep_dir: Path,
    *overrides: str,
    app: Callable[[], object] = search_worker.main,
) -> None:
    """``train.py hparams_search=optuna_lr_width ...`` in this process, as Hydra runs it."""
    argv = [
        "train.py",
        "hparams_search=optuna_lr_width",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.sampler.seed=0",
        *overrides,
    ]
    monkeypatch.setattr(sys, "argv", argv)
    app()


class StandInLauncher(Launcher):
    """Runs a search's jobs without Hydra or training: each job's folder gets the metrics.json
    tests/search_worker.py's job would write. ``ran``: (trial, seed) of every job, in order."""

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir, self.ran = sweep_dir, []

    def setup(self, **kwargs: object) -> None:
        pass

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        for overrides in job_overrides:
            cfg = OmegaConf.from_dotlist([o for o in overrides if not o.startswith("hydra.")])
            cfg.seed = cfg.get("seed", 42)
            folder = self.sweep_dir / dict(o.split("=", 1) for o in overrides)["hydra.sweep.subdir"]
            folder.mkdir(parents=True)
            value = search_worker.score(cfg)
            metrics = {"status": "completed", "val/acc_best": value, "epochs": 1}
            (folder / "metrics.json").write_text(json.dumps(metrics))
            self.ran.append((cfg.search.trial, cfg.seed))
        return []


@functools.cache
def search_config() -> DictConfig:
    """``train.py hparams_search=optuna_lr_width`` composed with Hydra's node, once per session."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", ["hparams_search=optuna_lr_width"], return_hydra_config=True)


def direct_search(sweep_dir: Path, seed: int = 42, **changes: object) -> StandInLauncher:
    """A search as conf/hparams_search/optuna_lr_width.yaml configures it, ``changes`` made to
    its ``hydra.sweeper`` settings, run by cifarlab.search.Search with the stand-in launcher."""
    cfg = search_config().copy()
    with open_dict(cfg):
        cfg.seed = seed
        cfg.hydra.sweep.dir = str(sweep_dir)
    settings = {**OmegaConf.to_container(cfg.hydra.sweeper), **changes}
    del settings["_target_"]
    settings["sampler"] = instantiate({**settings["sampler"], "seed": 0})
    settings["pruner"] = instantiate(settings["pruner"])
    launcher = StandInLauncher(sweep_dir)
    Search(config=cfg, launcher=launcher, **settings).run([])
    return launcher


def load(url: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=open_storage(url))


def table(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "trials.csv") as f:
        return list(csv.DictReader(f))


def test_space_from_yaml_gives_optuna_distributions() -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["hparams_search=optuna_lr_width"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.cifarlab_search.OptunaSearchSweeper"
    assert cfg.hydra.sweeper.metric == "val/acc_best" and cfg.hydra.sweeper.direction == "maximize"
    assert isinstance(instantiate(cfg.hydra.sweeper.pruner), optuna.pruners.MedianPruner)
    for name, pruner in (("hyperband", "HyperbandPruner"), ("none", "NopPruner")):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            other = compose(
                "train",
                ["hparams_search=optuna_lr_width", f"hydra/sweeper/pruner={name}"],
                return_hydra_config=True,
            )
        assert type(instantiate(other.hydra.sweeper.pruner)).__name__ == pruner
    space = search_space(cfg.hydra.sweeper.params)
    assert space == {
        "optimizer.lr": FloatDistribution(1e-4, 0.3, log=True),
        "model.width": CategoricalDistribution((8, 16, 32, 64)),
    }
    more = search_space(
        {
            "optimizer.weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
            "data.batch_size": {"type": "int", "low": 32, "high": 256, "step": 32},
            "model.width": {"type": "int", "low": 4, "high": 64, "log": True},
        }
    )
    assert more["optimizer.weight_decay"] == FloatDistribution(0.0, 0.1)
    assert more["data.batch_size"] == IntDistribution(32, 256, step=32)
    assert more["model.width"] == IntDistribution(4, 64, log=True)
    with pytest.raises(CifarlabError, match=r"params\.optimizer\.lr.*float, int or categorical"):
        search_space({"optimizer.lr": "tag(log, interval(1e-4, 0.3))"})
    with pytest.raises(CifarlabError, match=r"params\.optimizer\.lr=.*not a valid float range"):
        search_space({"optimizer.lr": {"type": "float", "low": 0.0, "high": 0.3, "log": True}})
    # a value goes back on the command line as exactly itself
    assert override("optimizer.lr", 0.1 + 0.2) == "optimizer.lr=0.30000000000000004"
    assert override("model.width", 32) == "model.width=32"
    assert override("data.augment", "32") == "data.augment='32'"
    assert override("tta", None) == "tta=null"


def test_trials_are_told_and_tabled_with_the_best_retrain_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    run_search(
        monkeypatch,
        sweep_dir,
        "hydra.sweeper.n_trials=4",
        "trainer.max_epochs=3",
        "+fake.fail_trial=1",
        "+fake.diverge_trial=2",
    )
    url = f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}"  # the default storage
    study = load(url)
    states = [t.state for t in study.trials]
    # a failed and a diverged trial are failed trials, and the search goes on
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    rows = table(sweep_dir)
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["status"] for r in rows][:3] == ["complete", "failed", "failed"]
    assert "trial 1 was told to fail" in rows[1]["error"]
    assert rows[2]["error"].startswith("diverged")
    for row, trial in zip(rows, study.trials, strict=True):
        assert float(row["optimizer.lr"]) == trial.params["optimizer.lr"]
        assert int(row["model.width"]) == trial.params["model.width"]
        assert Path(row["job_dir"]).name == f"trial_{trial.number}"
        assert row["epochs"] == (
            "" if row["status"] == "failed" and not row["error"].startswith("diverged") else "3"
        )
    assert float(rows[0]["val/acc_best"]) == pytest.approx(study.trials[0].value)

    text = (sweep_dir / "search.md").read_text()
    best = study.best_trial
    assert f"Best: trial {best.number}," in text
    line = next(line for line in text.splitlines() if line.startswith("uv run train.py "))
    args = shlex.split(line)[3:]
    assert "trainer.max_epochs=3" in args and not any("hparams_search" in a for a in args)
    retrained = dict(a.split("=", 1) for a in args)
    assert float(retrained["optimizer.lr"]) == best.params["optimizer.lr"]
    assert int(retrained["model.width"]) == best.params["model.width"]
    assert f"uvx optuna-dashboard {url}" in text


def test_rerunning_continues_the_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = direct_search(tmp_path / "first", storage=url, n_trials=2)
    second = direct_search(tmp_path / "second", storage=url, n_trials=3)
    third = direct_search(tmp_path / "third", storage=url, n_trials=3)
    assert [first.ran, second.ran, third.ran] == [[(0, 42), (1, 42)], [(2, 42)], []]
    assert [t.state for t in load(url).trials] == [TrialState.COMPLETE] * 3
    assert [r["number"] for r in table(tmp_path / "third")] == ["0", "1", "2"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # our stand-in for the dead worker
@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_a_dead_workers_trial_is_failed_and_its_place_freed(tmp_path: Path, storage: str) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}" if storage == "sqlite" else str(tmp_path / "j.log")
    backend = open_storage(url, heartbeat_interval=1, grace_period=1)
    dead = optuna.create_study(study_name=STUDY, storage=backend, direction="maximize").ask()
    if storage == "sqlite":  # Optuna's heartbeat, timed by the database clock (whole seconds)
        backend.record_heartbeat(trial_id(backend, STUDY, dead.number))
        time.sleep(2.5)
    else:
        dead.set_user_attr(HEARTBEAT, time.time() - 5)
    search = direct_search(
        tmp_path / "sweep", storage=url, n_trials=2, heartbeat_interval=1, grace_period=1
    )
    assert search.ran == [(1, 42), (2, 42)], "the dead trial is not run again; two new ones are"
    trials = load(url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert table(tmp_path / "sweep")[0]["status"] == "failed (its worker stopped)"


def test_two_workers_on_one_storage_share_n_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    runs_log, barrier = tmp_path / "runs.txt", tmp_path / "barrier"
    barrier.mkdir()
    command = [
        sys.executable,
        search_worker.__file__,
        "hparams_search=optuna_lr_width",
        f"hydra.sweeper.storage={url}",
        "hydra.sweeper.n_trials=4",
        f"+fake.runs_log={runs_log}",
        f"+fake.barrier={barrier}",
        "+fake.workers=2",
        "~hydra.callbacks.sweep",  # its summary loads torch, which these workers do not need
    ]
    workers = [
        subprocess.Popen(
            [*command, f"hydra.sweep.dir={tmp_path / f'sweep{n}'}"],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
        )
        for n in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err.decode()[-3000:]
    runs = [line.split() for line in runs_log.read_text().splitlines()]
    assert sorted(int(trial) for trial, _, _ in runs) == list(range(4)), "each trial ran once"
    assert len({pid for _, pid, _ in runs}) == 2, "both workers ran trials"
    study = load(url)
    ran = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(ran) == 4 and {t.number for t in ran} == set(range(4))
    assert all(t.state == TrialState.FAIL for t in study.trials if t.number >= 4)
    for n in range(2):  # each worker's table lists the whole study
        assert [r["number"] for r in table(tmp_path / f"sweep{n}")] == ["0", "1", "2", "3"]


def test_n_seeds_evaluates_each_parameter_set_on_every_seed(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    search = direct_search(sweep_dir, seed=7, n_trials=2, n_seeds=3)
    assert sorted(search.ran) == [(trial, seed) for trial in (0, 1) for seed in (7, 8, 9)]
    for trial in load(f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}").trials:
        values = [
            json.loads((sweep_dir / f"trial_{trial.number}_seed_{s}" / "metrics.json").read_text())
            for s in (7, 8, 9)
        ]
        assert len({v["val/acc_best"] for v in values}) == 3
        assert trial.value == pytest.approx(sum(v["val/acc_best"] for v in values) / 3)
    assert table(sweep_dir)[0]["seeds"] == "7 8 9"
    line = next(ln for ln in (sweep_dir / "search.md").read_text().splitlines() if "train.py" in ln)
    assert line.endswith("seed=7")


def test_a_pruned_trial_keeps_its_epoch_and_files(
    monkeypatch: pytest.MonkeyPatch, folder_root: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    run_search(
        monkeypatch,
        sweep_dir,
        *[o for o in sweep_overrides(folder_root, tmp_path) if "max_epochs" not in o],
        "trainer.max_epochs=4",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.n_seeds=2",
        # prunes every trial whose val/acc is below 2 after its first validation
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=2.0",
        "+hydra.sweeper.pruner.n_warmup_steps=1",
        app=train_app,
    )
    (trial,) = load(f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}").trials
    assert trial.state == TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [0, 1], "val/acc after each validation"
    assert trial.user_attrs["epochs"] == 2
    job = sweep_dir / "trial_0_seed_42"
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "pruned" and metrics["epochs"] == 2 and "test/acc" not in metrics
    assert math.isclose(metrics["val/acc_best"], trial.user_attrs["metric"])
    assert (job / "checkpoints" / "last.ckpt").is_file() and (job / "history.csv").is_file()
    assert list((job / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (sweep_dir / "trial_0_seed_43").exists(), "a pruned trial runs no further seed"
    row = table(sweep_dir)[0]
    assert row["status"] == "pruned" and row["epochs"] == "2"


def test_searched_keys_have_hparams_columns() -> None:
    hparams = {
        "model": {"name": "bn_cnn", "width": 16},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "class_names": ["cat", "dog"],
        "data": {"batch_size": 16},
        "loss": {"label_smoothing": 0.1},
    }
    swept = {"optimizer.lr", "loss.label_smoothing", "ema.decay"}
    experiment, start, _ = hparams_summaries(hparams, 2, swept)
    content = experiment.value[0].metadata.plugin_data.content
    infos = plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos
    differs = {i.name for i in infos if i.differs}
    assert differs == {"lr", "loss.label_smoothing"}, "ema.decay is not a run hyperparameter"
    content = start.value[0].metadata.plugin_data.content
    values = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert values["loss.label_smoothing"].number_value == pytest.approx(0.1)


def test_a_mistake_in_the_search_is_one_paragraph(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        run_search(monkeypatch, tmp_path / "sweep", "model.width=8,16")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: model.width=8,16: a search takes its parameters from hydra.sweeper.params" in err
    assert "Traceback" not in err and not (tmp_path / "sweep" / "optuna.db").exists()
