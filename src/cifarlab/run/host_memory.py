"""Keeps freed host memory inside the process, so CPU training stops page-faulting every step.

glibc's malloc serves each block above 32 MiB with a fresh ``mmap`` and unmaps it on ``free``. A
training step on the CPU allocates and frees activations of hundreds of MiB, so every step the
kernel maps them in again one 4 KiB page at a time and zeroes each page. Measured on a 2-core
CPU with fastnet at batch 2000 (benchmarks/bench_host_memory.py, docs/benchmarks.md): 18-25% of
the CPU time in the kernel, and 23-31% more images per second once malloc keeps its freed blocks
(``mallopt``: no mmap, no trim), as jemalloc or tcmalloc would, without preloading either. The
cost: the process keeps its peak heap until it exits, which training reaches in its first step.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt parameters from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to reuse freed blocks rather than return them to the kernel.

    Returns whether it applied: only with glibc (Linux); elsewhere malloc is left as it is.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, INT_MAX))
