"""hardware.keep_freed_host_memory: on the CPU, malloc reuses freed blocks, no re-faulting."""

import platform
import subprocess
import sys

import pytest

from cifarlab import accelerators

from .conftest import compose_config

# allocates, touches and frees 64 MiB three times; prints the minor page faults of the last two
FAULTS_SCRIPT = """
import ctypes, resource, sys
from cifarlab.host_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 * 2**20
for i in range(3):
    if i == 1:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def minor_faults(mode: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(proc.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    pages = 2 * 64 * 2**20 // 4096  # two allocations of 64 MiB in 4 KiB pages
    assert minor_faults("default") > pages // 2  # glibc unmaps and faults every block back in
    assert minor_faults("keep") < pages // 50


def trainer_config(*overrides: str):
    return compose_config(
        "train", ["trainer.accelerator=cpu", "trainer.default_root_dir=null", *overrides]
    )


@pytest.mark.parametrize(("setting", "applied"), [("auto", True), ("false", False)])
def test_cpu_training_keeps_freed_memory_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch, setting: str, applied: bool
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(accelerators, "keep_freed_memory", lambda: calls.append(True))
    cfg = trainer_config(f"hardware.keep_freed_host_memory={setting}")
    accelerators.build_trainer(cfg.trainer, cfg.hardware, logger=False)
    assert bool(calls) is applied
