"""Checks a trainer config against the hardware that is really there.

Lightning reports a missing GPU or an impossible strategy deep inside ``Trainer(...)`` as a
traceback, and a multi-node run without a cluster simply waits forever for the other nodes. These
checks run before the Trainer is built (cifarlab.run.trainer) and say, in one paragraph, what the
preset asked for and what this machine has.
"""

from __future__ import annotations

import multiprocessing as mp
import platform
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import (
    LSFEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from omegaconf import DictConfig, ListConfig, OmegaConf

from cifarlab.errors import CifarlabError
from cifarlab.utils import usable_cpus

# Lightning's strategy names that start their processes with multiprocessing inside this job
IN_PROCESS_DDP = {"ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}
# launchers that start one process per device themselves (Kubeflow is not auto-detectable)
CLUSTER_ENVIRONMENTS = (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment)


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
