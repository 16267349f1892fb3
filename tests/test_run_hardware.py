"""Trainer presets against the hardware that is there, DDP on CPUs, and the GPU speed options.

The DDP runs use ``trainer=ddp_cpu`` (2 forked CPU processes, gloo) on the tiny folder data; tests
marked ``gpu`` need CUDA and are skipped without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from cifarlab.errors import CifarlabError
from cifarlab.run import hardware
from cifarlab.run.hardware import check_trainer_config, requested_gpus
from cifarlab.run.jobs import evaluate, train
from cifarlab.run.trainer import build_trainer, relaunches_script
from cifarlab.training.module import ClassifierModule
from cifarlab.utils import to_plain_dict

from .conftest import compose_config, eval_cfg, quick_overrides, run_script, sweep_overrides
from .injected_callbacks import SplitProbe, target_of

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def one_fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU 80GB")


def trainer_cfg(*overrides: str) -> Any:
    return compose_config("train", list(overrides)).trainer


@pytest.mark.parametrize("preset", ["gpu", "ddp"])
def test_gpu_presets_without_a_gpu_say_what_was_found(
    preset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_gpus(monkeypatch)
    with pytest.raises(CifarlabError) as err:
        check_trainer_config(trainer_cfg(f"trainer={preset}"))
    message = str(err.value)
    assert "no CUDA GPU" in message and "CPU core" in message and "trainer=cpu" in message


def test_more_gpus_than_there_are_names_the_ones_found(monkeypatch: pytest.MonkeyPatch) -> None:
    one_fake_gpu(monkeypatch)
    check_trainer_config(trainer_cfg("trainer=gpu"))
    check_trainer_config(trainer_cfg("trainer=ddp"))  # auto: all of the one GPU
    with pytest.raises(CifarlabError, match=r"needs 2 CUDA GPU.*1 CUDA GPU\(s\) \(Fake GPU 80GB\)"):
        check_trainer_config(trainer_cfg("trainer=ddp", "trainer.devices=2"))
    with pytest.raises(CifarlabError, match="needs 2 CUDA GPU"):
        check_trainer_config(trainer_cfg("trainer=ddp", "trainer.devices=[0,3]"))


def test_mps_preset_without_mps_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    cfg = trainer_cfg("trainer=mps")
    assert cfg.accelerator == "mps" and cfg.devices == 1
    with pytest.raises(CifarlabError, match="trainer=mps.*Apple.*no Apple MPS"):
        check_trainer_config(cfg)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    check_trainer_config(cfg)
    with pytest.raises(CifarlabError, match="one MPS device"):
        check_trainer_config(trainer_cfg("trainer=mps", "trainer.devices=2"))


@pytest.mark.parametrize(
    ("devices", "count"), [("auto", None), (-1, None), (2, 2), ("3", 3), ("0,1", 2), ([1], 1)]
)
def test_requested_gpus_reads_every_form_of_devices(devices: Any, count: int | None) -> None:
    assert requested_gpus(devices) == count


def test_multi_node_without_a_cluster_is_refused_and_allowed_under_slurm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = trainer_cfg("trainer=ddp_cpu", "trainer.num_nodes=2")
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "LOCAL_RANK", "LSB_JOBID"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CifarlabError, match="num_nodes=2.*wait forever"):
        check_trainer_config(cfg)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    check_trainer_config(cfg)


def fake_multirun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(
        HydraConfig, "get", staticmethod(lambda: SimpleNamespace(mode=RunMode.MULTIRUN))
    )


def build(*overrides: str) -> L.Trainer:
    cfg = compose_config("train", ["paths.output_dir=unused", *overrides])
    return build_trainer(cfg.trainer, cfg.hardware, logger=False, enable_progress_bar=False)


def test_script_relaunching_ddp_is_refused_inside_a_multirun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lightning's script-launched ddp runs train.py again per device; under -m that would re-run
    the sweep. Judged by the launcher Lightning set up, not by the strategy's name: strategy=auto
    with 2 devices is script-launched ddp too, while ddp on one device launches nothing."""
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "LOCAL_RANK", "LSB_JOBID"):
        monkeypatch.delenv(var, raising=False)
    build("trainer=ddp_cpu", "trainer.strategy=ddp")  # a single run may re-launch itself
    fake_multirun(monkeypatch)
    for relaunching in (
        ["trainer=ddp_cpu", "trainer.strategy=ddp"],
        ["trainer.accelerator=cpu", "trainer.devices=2"],  # strategy auto: Lightning picks ddp
    ):
        with pytest.raises(CifarlabError, match="multirun.*ddp_spawn.*hydra/launcher=slurm"):
            build(*relaunching)
    build("trainer=ddp_cpu")  # ddp_fork starts its workers inside the job
    build("trainer=ddp_cpu", "trainer.strategy=ddp_spawn")
    build("trainer=ddp_cpu", "trainer.strategy=ddp", "trainer.devices=1")  # nothing to launch
    # under SLURM, srun starts the processes and Lightning launches none
    slurm = {"NTASKS": "2", "NTASKS_PER_NODE": "2", "JOB_NAME": "train", "NODELIST": "node1"}
    for var, value in {**slurm, "NODEID": "0", "PROCID": "0", "LOCALID": "0"}.items():
        monkeypatch.setenv(f"SLURM_{var}", value)
    build("trainer=ddp_cpu", "trainer.strategy=ddp")


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """``count`` CUDA GPUs as torch and Lightning see them (nothing runs on them)."""
    import lightning.fabric.accelerators.cuda as fabric_cuda
    import lightning.pytorch.accelerators.cuda as pytorch_cuda

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    monkeypatch.setattr(fabric_cuda, "num_cuda_devices", lambda: count)
    monkeypatch.setattr(pytorch_cuda, "num_cuda_devices", lambda: count)


def test_default_trainer_uses_one_of_several_gpus_and_only_ddp_takes_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a 4-GPU machine the default must not silently become 4-process ddp (another global
    batch, and the script started again per GPU)."""
    fake_gpus(monkeypatch, 4)
    default = build()
    assert default.num_devices == 1 and type(default.strategy).__name__ == "SingleDeviceStrategy"
    assert str(default.strategy.root_device) == "cuda:0" and not relaunches_script(default)
    gpu = build("trainer=gpu")
    assert gpu.num_devices == 1
    ddp = build("trainer=ddp")
    assert ddp.num_devices == 4 and relaunches_script(ddp)


def test_gpu_preset_on_apple_silicon_runs_on_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's accelerator=gpu means CUDA, else MPS; only 'cuda' insists on CUDA."""
    no_gpus(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    check_trainer_config(trainer_cfg("trainer=gpu"))
    with pytest.raises(CifarlabError, match="one MPS device"):
        check_trainer_config(trainer_cfg("trainer=gpu", "trainer.devices=2"))
    with pytest.raises(CifarlabError, match="needs 1 CUDA GPU"):
        check_trainer_config(trainer_cfg("trainer=gpu", "trainer.accelerator=cuda"))


def test_gpu_presets_turn_on_tf32_and_cudnn_autotuning_each_overridable() -> None:
    for preset in ("gpu", "ddp"):
        cfg = compose_config("train", [f"trainer={preset}"])
        assert cfg.hardware.float32_matmul_precision == "high" and cfg.trainer.benchmark is True
    default = compose_config("train", [])
    assert default.hardware.float32_matmul_precision is None and default.trainer.benchmark is None
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark)
    try:
        # the same keys on the CPU, where building the Trainer applies them
        build("trainer=cpu", "hardware.float32_matmul_precision=high", "trainer.benchmark=true")
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.benchmark is True
        build("trainer=cpu", "hardware.float32_matmul_precision=highest", "trainer.benchmark=false")
        assert torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.benchmark = before[1]


def test_fork_strategy_on_a_platform_without_fork_points_to_spawn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hardware.mp, "get_all_start_methods", lambda: ["spawn"])
    with pytest.raises(CifarlabError, match="ddp_fork.*'fork'.*trainer.strategy=ddp_spawn"):
        check_trainer_config(trainer_cfg("trainer=ddp_cpu"))


@pytest.mark.parametrize("precision", ["bogus", "8"])
def test_precision_lightning_refuses_becomes_one_paragraph(tmp_path: Path, precision: str) -> None:
    cfg = compose_config(
        "train", [f"paths.output_dir={tmp_path}", "trainer=cpu", f"trainer.precision={precision}"]
    )
    with pytest.raises(CifarlabError, match=f"rejected the trainer config.*{precision}"):
        build_trainer(cfg.trainer, logger=False)


MODULE_ARGS = {"class_names": ["a", "b", "c"], "optimizer": {"name": "sgd", "lr": 0.1}}


def test_channels_last_converts_the_net_and_keeps_its_state_dict() -> None:
    plain_module = ClassifierModule(model={"name": "bn_cnn", "width": 8}, **MODULE_ARGS)
    fast = ClassifierModule(
        model={"name": "bn_cnn", "width": 8}, data={"channels_last": True}, **MODULE_ARGS
    )
    conv = fast.net.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert plain_module.net.features[0].weight.is_contiguous()
    assert list(fast.state_dict()) == list(plain_module.state_dict())
    plain_module.load_state_dict(fast.state_dict())


@pytest.mark.slow  # 60 s on the shared 2 cores; channels_last alone stays in the default suite
def test_bf16_channels_last_run_trains_and_its_checkpoint_evaluates(
    folder_root: Path, tmp_path: Path
) -> None:
    """The GPU speed options by config, on the CPU: bf16 autocast and NHWC batches and weights."""
    cfg = compose_config(
        "train",
        [
            *quick_overrides(folder_root, tmp_path / "run"),
            "model=bn_cnn",
            "model.width=8",
            "trainer.precision=bf16-mixed",
            "data.channels_last=true",
        ],
    )
    assert cfg.model.compile is False
    trained = train(cfg)
    assert trained["test/acc"] >= 0.8
    evaluated = evaluate(
        eval_cfg(
            trained["best_ckpt"], tmp_path / "eval", "trainer=cpu", "trainer.precision=bf16-mixed"
        )
    )
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)


def ddp_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [*quick_overrides(root, out), "model=bn_cnn", "model.width=8", *extra]


# 128 s on the shared 2 cores; DDP stays in the default suite through
# test_ddp_cpu_inside_a_hydra_multirun, test_strategies and test_run_jobs' ddp_fork report test
@pytest.mark.slow
def test_two_process_ddp_matches_one_process(folder_root: Path, tmp_path: Path) -> None:
    """Same data and global batch: 2 CPU processes reach the 1-process accuracy within noise, each
    rank validates its half of the same split, and evaluating one checkpoint on 1 or 2 processes
    gives identical (synchronized) numbers."""
    probe = tmp_path / "probe"
    single = train(compose_config("train", ddp_overrides(folder_root, tmp_path / "one")))
    double = train(
        compose_config(
            "train",
            ddp_overrides(
                folder_root,
                tmp_path / "two",
                "trainer=ddp_cpu",
                "data.batch_size=8",  # per process: the same global batch (16) and step count
                f"+callbacks.probe._target_={target_of(SplitProbe)}",
                f"+callbacks.probe.out_dir={probe}",
            ),
        )
    )
    assert double["epochs"] == single["epochs"] == 2
    assert Path(double["last_ckpt"]).is_file() and Path(double["best_ckpt"]).is_file()
    assert single["test/acc"] >= 0.8 and abs(double["test/acc"] - single["test/acc"]) <= 0.15
    saved = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(double))

    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["val_sha1"] == ranks[1]["val_sha1"]
    assert [r["seen"] for r in ranks] == [12, 12]  # 24 validation images, half on each rank

    # a checkpoint after one step, so that accuracy and loss are far from any trivial value
    early = train(
        compose_config(
            "train",
            ddp_overrides(
                folder_root, tmp_path / "early", "data.batch_size=96", "trainer.max_epochs=1"
            ),
        )
    )
    one, two = (
        evaluate(eval_cfg(early["best_ckpt"], tmp_path / preset, f"trainer={preset}"))
        for preset in ("cpu", "ddp_cpu")
    )
    # unsynchronized metrics would give rank 0's half of the test set: a different loss
    assert two["test/loss"] == pytest.approx(one["test/loss"], rel=1e-5)
    assert two["test/acc"] == pytest.approx(one["test/acc"], abs=1e-6)
    assert two["test/acc_class"] == pytest.approx(one["test/acc_class"], abs=1e-6)


def test_ddp_cpu_inside_a_hydra_multirun(folder_root: Path, tmp_path: Path) -> None:
    overrides = sweep_overrides(folder_root, tmp_path)
    sweep = tmp_path / "sweep"
    proc = run_script(
        "train.py",
        "-m",
        *overrides,
        "trainer=ddp_cpu",
        "model=bn_cnn",
        "model.width=4,8",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(sweep.glob("*/metrics.json"))
    assert [p.parent.name for p in jobs] == ["0", "1"]
    for job in jobs:
        metrics = json.loads(job.read_text())
        assert metrics["status"] == "completed" and metrics["epochs"] == 1
        assert Path(metrics["last_ckpt"]).is_file()
    assert proc.stdout.count("test accuracy (1 epochs)") == 2  # one table per job, not per rank


@pytest.mark.slow
def test_script_relaunching_ddp_runs_every_rank_but_rank_zero_reports(
    folder_root: Path, tmp_path: Path
) -> None:
    """Lightning's 'ddp' (as under SLURM): every rank runs the whole job; one table, one file."""
    overrides = sweep_overrides(folder_root, tmp_path)
    proc = run_script(
        "train.py",
        *overrides,
        "trainer=ddp_cpu",
        "trainer.strategy=ddp",
        "data.batch_size=8",
        "model=bn_cnn",
        "model.width=8",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in proc.stderr + proc.stdout
    assert proc.stdout.count("test accuracy (2 epochs)") == 1
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["test/acc"] >= 0.8


@pytest.mark.slow
def test_compiled_model_trains_on_cpu_and_its_checkpoint_loads_uncompiled(
    folder_root: Path, tmp_path: Path
) -> None:
    """torch.compile (a GPU speed option) on the CPU, where it needs a C compiler. That it
    compiles once per process: tests/test_training_module.py."""
    cfg = compose_config(
        "train", [*ddp_overrides(folder_root, tmp_path / "run"), "model.compile=true"]
    )
    trained = train(cfg)
    assert trained["test/acc"] >= 0.8
    ckpt = torch.load(trained["best_ckpt"], weights_only=True)
    assert not any("_orig_mod" in key for key in ckpt["state_dict"])
    evaluated = evaluate(eval_cfg(trained["best_ckpt"], tmp_path / "eval", "trainer=cpu"))
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)


def gpu_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [o for o in [*ddp_overrides(root, out), *extra] if o != "trainer.accelerator=cpu"]


@pytest.mark.gpu
@needs_cuda
def test_gpu_run_with_every_speed_option(folder_root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "train",
        gpu_overrides(
            folder_root,
            tmp_path,
            "trainer=gpu",
            "trainer.precision=bf16-mixed",
            "model.compile=true",
            "data.channels_last=true",
        ),
    )
    metrics = train(cfg)
    assert metrics["test/acc"] >= 0.8 and metrics["epochs"] == 2


@pytest.mark.gpu
@needs_cuda
def test_gpu_data_stays_on_the_gpu(folder_root: Path, tmp_path: Path) -> None:
    from cifarlab.data import CIFAR10DataModule

    cfg = compose_config("train", gpu_overrides(folder_root, tmp_path, "trainer=gpu"))
    dm = CIFAR10DataModule(**to_plain_dict(cfg.data), seed=0)
    module = ClassifierModule(
        model=to_plain_dict(cfg.model),
        class_names=dm.class_names,
        optimizer=to_plain_dict(cfg.optimizer),
    )
    trainer = build_trainer(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    trainer.fit(module, datamodule=dm)
    for batches in (dm.train_dataloader(), dm.val_dataloader()):  # each split moved once, whole
        assert batches.images.is_cuda and batches.labels.is_cuda
    x, _ = next(iter(dm.train_dataloader()))
    assert x.is_cuda


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_ddp_preset_on_two_gpus(folder_root: Path, tmp_path: Path) -> None:
    overrides = [
        o
        for o in gpu_overrides(
            folder_root, tmp_path, "trainer=ddp", "trainer.devices=2", "data.batch_size=8"
        )
        if "output_dir" not in o
    ]
    proc = run_script("train.py", *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test accuracy (2 epochs)") == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/acc"] >= 0.8
