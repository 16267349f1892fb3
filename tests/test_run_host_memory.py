"""hardware.keep_freed_host_memory: on the CPU, malloc reuses freed blocks, no re-faulting."""

import platform
import subprocess
import sys

import pytest

from .conftest import ROOT

# minor_faults(): the minor page faults of allocating, touching and freeing 64 MiB twice, after
# a first round (glibc serves blocks that large with mmap, unless told to keep freed memory)
MEASURE = """
import ctypes, resource

def minor_faults() -> int:
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
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
"""
KEEP = """
import sys
from cifarlab.run.host_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
print(minor_faults())
"""
# the trainer of each setting in turn, in one process: "false" first, since malloc, once told to
# keep its freed memory, keeps it until the process ends
TRAINERS = """
import sys
from cifarlab.run.trainer import build_trainer
from tests.conftest import compose_config
for setting in sys.argv[1:]:
    overrides = ["trainer.accelerator=cpu", "trainer.default_root_dir=null"]
    cfg = compose_config("train", [*overrides, f"hardware.keep_freed_host_memory={setting}"])
    build_trainer(cfg.trainer, cfg.hardware, logger=False)
    print(minor_faults())
"""
PAGES = 2 * 64 * 2**20 // 4096  # two allocations of 64 MiB in 4 KiB pages

needs_glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


def minor_faults(script: str, *args: str) -> list[int]:
    """What ``script`` (which may call MEASURE's ``minor_faults()``) prints, one count a line."""
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE + script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [int(line) for line in proc.stdout.split()]


@needs_glibc
def test_freed_blocks_are_reused_without_page_faults() -> None:
    assert minor_faults(KEEP, "default")[0] > PAGES // 2  # glibc unmaps and faults every block in
    assert minor_faults(KEEP, "keep")[0] < PAGES // 50


@needs_glibc
def test_cpu_training_keeps_freed_memory_unless_turned_off() -> None:
    turned_off, auto = minor_faults(TRAINERS, "false", "auto")
    assert turned_off > PAGES // 2 and auto < PAGES // 50
