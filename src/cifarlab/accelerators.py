"""Checks a trainer config against the hardware that is really there, then builds the Trainer.

Lightning reports a missing GPU or an impossible strategy deep inside ``Trainer(...)`` as a
traceback, and a multi-node run without a cluster simply waits forever for the other nodes. These
checks run first and say, in one paragraph, what the preset asked for and what this machine has.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import platform
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import (
    LSFEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig, OmegaConf

from cifarlab.errors import CifarlabError
from cifarlab.host_memory import keep_freed_memory
from cifarlab.internals import in_process_workers, launches_by_running_the_script, signal_workers
from cifarlab.utils import in_multirun, log, usable_cpus

# Lightning's strategy names that start their processes with multiprocessing inside this job
IN_PROCESS_DDP = {"ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}
# launchers that start one process per device themselves (Kubeflow is not auto-detectable)
CLUSTER_ENVIRONMENTS = (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment)
# how long the job's process waits for ddp_spawn/ddp_fork workers to stop after a SIGTERM (they
# stop at their next batch; a cluster's grace period before SIGKILL is usually 30 s or more)
WORKER_STOP_TIMEOUT_S = 120


def found_hardware() -> str:
    """What this machine offers, in the words a user would check (for error messages)."""
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gpus = f"{len(names)} CUDA GPU(s) ({', '.join(names)})"
    elif torch.version.cuda is None:
        gpus = f"no CUDA GPU (this torch {torch.__version__} is a CPU-only build)"
    else:
        gpus = f"no CUDA GPU (torch {torch.__version__} with CUDA {torch.version.cuda} finds none)"
    if torch.backends.mps.is_available():
        mps = "Apple MPS available"
    elif torch.backends.mps.is_built():
        mps = "no Apple MPS device (torch has MPS support, but macOS/the Mac offers none)"
    else:
        mps = f"no Apple MPS (MPS needs an Apple-silicon Mac; this is {platform.system()})"
    return f"{gpus}; {mps}; {usable_cpus()} CPU core(s) for this process"


def requested_gpus(devices: Any) -> int | None:
    """How many GPUs ``trainer.devices`` asks for; None for 'all there are' (auto, -1)."""
    if devices in (None, "auto", -1, "-1"):
        return None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    try:
        if isinstance(devices, str) and "," in devices:
            return len([p for p in devices.split(",") if p.strip()])
        return int(devices)
    except (TypeError, ValueError):
        return None  # not a count: Lightning's own parser reports it


def _cluster_starts_processes() -> bool:
    """True under SLURM, torchrun and the like: they start one process per device themselves."""
    return any(env.detect() for env in CLUSTER_ENVIRONMENTS)


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _check_devices(accelerator: str, devices: Any) -> None:
    wanted = requested_gpus(devices)
    # Lightning's "gpu" is CUDA where there is one, else Apple's MPS; "cuda" is CUDA only
    if accelerator == "gpu" and _cuda_count() == 0 and torch.backends.mps.is_available():
        accelerator = "mps"
    if accelerator in ("gpu", "cuda"):
        available = _cuda_count()
        if available == 0 or (wanted is not None and wanted > available):
            need = "a CUDA GPU" if wanted is None else f"{wanted} CUDA GPU(s)"
            raise CifarlabError(
                f"trainer.accelerator={accelerator} with trainer.devices={devices} needs {need}, "
                f"but this machine has {found_hardware()}. Use trainer=cpu (or trainer=ddp_cpu to "
                "try DDP on CPUs), lower trainer.devices, or run where the GPUs are."
            )
    elif accelerator == "mps":
        if not torch.backends.mps.is_available():
            raise CifarlabError(
                f"trainer=mps (trainer.accelerator=mps) needs Apple's Metal GPU, but this machine "
                f"has {found_hardware()}. Use trainer=cpu, or the default trainer "
                "(accelerator: auto), which picks CUDA, then MPS, then the CPU."
            )
        if wanted not in (None, 1):
            raise CifarlabError(
                f"trainer.devices={devices} with trainer.accelerator=mps: a Mac has one MPS "
                "device, so use trainer.devices=1."
            )


def _check_strategy(strategy: Any, num_nodes: Any) -> None:
    if not isinstance(strategy, str):
        return
    if strategy.startswith("ddp") and not dist.is_available():
        raise CifarlabError(
            f"trainer.strategy={strategy} needs torch.distributed, which this torch "
            f"{torch.__version__} build lacks. Use trainer=cpu or trainer=gpu (one device)."
        )
    start_method = IN_PROCESS_DDP.get(strategy)
    if start_method is not None and start_method not in mp.get_all_start_methods():
        raise CifarlabError(
            f"trainer.strategy={strategy} starts its workers with '{start_method}', which "
            f"{platform.system()} does not offer (it has {', '.join(mp.get_all_start_methods())}). "
            "Use trainer.strategy=ddp_spawn."
        )
    cluster = _cluster_starts_processes()
    if isinstance(num_nodes, int) and num_nodes > 1 and not cluster:
        raise CifarlabError(
            f"trainer.num_nodes={num_nodes} needs a cluster that starts the processes on every "
            "node (SLURM, torchrun or LSF), but none was found, so the run would wait "
            "forever for the other nodes. Run it under SLURM (hydra/launcher=slurm or sbatch + "
            "srun), or use trainer.num_nodes=1."
        )


def check_trainer_config(trainer_cfg: DictConfig | Mapping[str, Any]) -> None:
    """Raises CifarlabError when the config asks for hardware or a launch this machine lacks."""

    def value(key: str, default: Any) -> Any:  # read key by key: the rest may need Hydra to resolve
        node = trainer_cfg.get(key, default)
        return OmegaConf.to_container(node) if isinstance(node, ListConfig) else node

    accelerator = str(value("accelerator", None) or "auto").lower()
    _check_devices(accelerator, value("devices", "auto"))
    _check_strategy(value("strategy", None), value("num_nodes", 1))


def relaunches_script(trainer: L.Trainer) -> bool:
    """True when ``trainer.fit`` would start its other processes by running this script again.

    Decided from what Lightning set up, not from the strategy's name: ``strategy=auto`` with
    several devices also becomes script-launched ``ddp``, while ``ddp`` on one device, or under
    SLURM/torchrun (which start every process themselves), launches nothing.
    """
    strategy = trainer.strategy
    if not launches_by_running_the_script(strategy):
        return False
    environment = getattr(strategy, "cluster_environment", None)
    external = environment is not None and environment.creates_processes_externally
    return not external and trainer.num_devices > 1


@contextlib.contextmanager
def sigterm_reaches_workers(trainer: L.Trainer) -> Iterator[None]:
    """Around ``trainer.fit``: a SIGTERM to this process stops ddp_spawn/ddp_fork workers the way
    Lightning stops a single process, and ends this one as a single process ends.

    With those strategies this process only waits for its workers (in ``mp.start_processes``).
    Lightning installs its SIGTERM handler in the workers only, so a SIGTERM here (a cluster's time
    limit) would kill this process at once, with nothing recorded, and torch's SIGINT-on-parent-
    death would cut the workers off mid-epoch. Here the signal is passed on to the workers, whose
    Lightning handler stops them at their next batch, and raised here as Lightning's loops raise
    it (``SIGTERMException``), so fit ends as interrupted; on the way out this process waits for
    the workers to end. The workers inherit the handler (fork) and Lightning calls it after its
    own; it does nothing outside this process. Other launches are left to Lightning.
    """
    in_process = in_process_workers(trainer.strategy) is not None
    if not in_process or threading.current_thread() is not threading.main_thread():
        yield
        return
    job_pid, received = os.getpid(), []

    def pass_on(signum: int, frame: Any) -> None:
        if os.getpid() != job_pid or received:
            return  # a worker (Lightning's own handler acts there), or the signal came again
        received.append(signum)
        signal_workers(trainer.strategy, signal.Signals(signum))
        raise SIGTERMException

    previous = signal.signal(signal.SIGTERM, pass_on)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if received:
            _wait_for(in_process_workers(trainer.strategy) or [])


def _wait_for(workers: list[mp.process.BaseProcess]) -> None:
    deadline = WORKER_STOP_TIMEOUT_S
    for worker in workers:
        start = time.monotonic()
        worker.join(max(deadline, 0))
        deadline -= time.monotonic() - start
    alive = [w.pid for w in workers if w.is_alive()]
    if alive:
        log.warning(
            "Worker process(es) %s did not stop within %d s of the SIGTERM.",
            alive,
            WORKER_STOP_TIMEOUT_S,
        )


def build_trainer(
    trainer_cfg: DictConfig, hardware: Mapping[str, Any] | None = None, **kwargs: Any
) -> L.Trainer:
    """Checks the config against the hardware, applies the ``hardware`` settings, then
    instantiates the Trainer; Lightning's refusals become one paragraph.

    ``hardware.float32_matmul_precision``: "high" = TF32 tensor cores for float32 matmuls on
    Ampere and newer, null leaves torch's setting alone (cuDNN autotuning is Lightning's own
    ``trainer.benchmark``); ``hardware.keep_freed_host_memory``: auto = when the Trainer runs on
    the CPU. Lightning validates precision, accelerator and strategy names as it builds the
    Trainer (e.g. ``precision=16-mixed`` on a CPU); its message is kept, the traceback dropped.
    """
    check_trainer_config(trainer_cfg)
    hardware = hardware or {}
    if hardware.get("float32_matmul_precision") is not None:
        torch.set_float32_matmul_precision(hardware["float32_matmul_precision"])
    keep_memory = hardware.get("keep_freed_host_memory", "auto")
    arguments = OmegaConf.to_container(trainer_cfg, resolve=True)
    assert isinstance(arguments, dict)
    try:
        trainer = instantiate(arguments, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise CifarlabError(
            f"Lightning rejected the trainer config: {cause} Check trainer.accelerator, "
            "trainer.devices, trainer.strategy and trainer.precision (e.g. bf16-mixed, 16-mixed "
            "on a GPU, 32)."
        ) from None
    if in_multirun() and relaunches_script(trainer):
        raise CifarlabError(
            f"trainer.strategy={arguments.get('strategy')} with {trainer.num_devices} devices "
            "starts one process per device by running train.py again with the same command line "
            "(Lightning's script-launched ddp), which cannot work inside a Hydra multirun (-m): "
            "every copy would start the whole sweep. Use trainer.strategy=ddp_spawn for sweeps on "
            "this machine, or a cluster launcher (hydra/launcher=slurm) where SLURM starts the "
            "processes."
        )
    if keep_memory is True or (
        keep_memory == "auto" and isinstance(trainer.accelerator, CPUAccelerator)
    ):
        keep_freed_memory()
    return trainer
