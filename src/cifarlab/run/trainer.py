"""Builds the Trainer from the ``trainer`` config group, once the hardware checks have passed.

Lightning's refusals (a precision the device lacks, an unknown strategy) become one paragraph; the
``hardware`` group sets what is not a Trainer argument: torch's matmul precision and the host
allocator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from omegaconf import DictConfig, OmegaConf

from cifarlab.errors import CifarlabError
from cifarlab.internals import launches_by_running_the_script
from cifarlab.run.hardware import check_trainer_config
from cifarlab.run.host_memory import keep_freed_memory
from cifarlab.utils import in_multirun


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
