"""What the operating system enforces, for the tests of failed writes and dead writers: a cap on
the size of files (a disk that fills up) and the id of a process that has ended."""

from __future__ import annotations

import resource
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def file_size_limit() -> Iterator[None]:
    """Lets the code inside cap the size of every file this process writes (``RLIMIT_FSIZE``,
    set with ``resource.setrlimit``); restores the limit afterwards.

    Writes past the cap fail in the kernel with EFBIG, the way writes to a full disk fail with
    ENOSPC: a real failed write, and one that binds root too (tests may run as root, whom
    ``chmod`` does not stop). SIGXFSZ, which the kernel sends with it, would end the process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def limit_file_size(nbytes: int) -> None:
    """Inside ``file_size_limit``: no file may grow past ``nbytes`` from now on."""
    resource.setrlimit(
        resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
    )


def dead_pid() -> int:
    """The id of a process that has ended (and whose id is not yet reused)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
