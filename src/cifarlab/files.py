"""Safe file writes: a file is replaced whole or not at all, and a refused write says why."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cifarlab.errors import CifarlabError


class FileWriteError(CifarlabError):
    """A file could not be written (full disk, quota, read-only folder); the old file is intact.

    ``path`` is the file, ``reason`` the system's word for why (``No space left on device``).
    """

    def __init__(self, path: Path, cause: OSError) -> None:
        self.path, self.cause = Path(path), cause
        self.reason = cause.strerror or str(cause)
        at = Path(cause.filename) if isinstance(cause.filename, str) else None
        # the system names the file it refused; a parent folder is worth naming, our temp is not
        where = f" ({at})" if at and at != self.path and at.parent != self.path.parent else ""
        kept = f" The previous {self.path.name} is unchanged." if self.path.is_file() else ""
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            remedy = "free space on that disk (or raise the quota)"
        elif cause.errno == errno.EFBIG:
            remedy = "raise the file size limit (ulimit -f) or write to another file system"
        elif cause.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            remedy = f"make {self.path.parent} writable or write elsewhere"
        else:
            remedy = f"make sure {self.path} can be written as a file (or write elsewhere)"
        super().__init__(
            f"Could not write {self.path}: {self.reason}{where}.{kept} To go on, {remedy} and run "
            "again."
        )

    def __reduce__(self) -> tuple[type, tuple[Path, OSError]]:
        """Rebuilt from its arguments when pickled (a joblib sweep job sends it back)."""
        return type(self), (self.path, self.cause)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{socket.gethostname()}-"


def temp_path(path: Path, pid: int | None = None) -> Path:
    """Where ``write_atomic`` stages ``path`` (for process ``pid``, this one by default): beside
    it, so the final rename stays on one file system and is atomic, named by host and process so
    that a later write can tell the leftover of a killed writer from the file of a live one."""
    path = Path(path)
    return path.with_name(f"{_temp_prefix(path)}{pid or os.getpid()}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: asks whether the process exists, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Deletes the temporary files of ``path`` that writers on this host left when they were
    killed (SIGKILL, the OOM killer: no ``finally`` runs), so they never pile up; a cache's is
    the size of the data set. Those of live processes are left, and those of other hosts (a
    shared file system), whose processes this host cannot ask about. Signal 0 probes a process
    on POSIX only (on Windows ``os.kill`` would end it), so elsewhere nothing is removed."""
    if os.name != "posix":
        return
    prefix = _temp_prefix(path)
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            pid = entry.name[len(prefix) : -len(".tmp")]
            if (
                entry.name.startswith(prefix)
                and entry.name.endswith(".tmp")
                and pid.isdigit()
                and not _alive(int(pid))
            ):
                Path(entry.path).unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Makes the file's bytes durable before it is renamed into place: without it, a power cut
    after the rename can leave the new name on an empty or partial file. Linux and macOS flush
    through any descriptor; Windows needs a writable one."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Makes the rename itself durable (POSIX: the folder's entry is data of the folder). The
    new file is already in place, so a file system that cannot sync folders (some network
    ones answer EINVAL) changes nothing about the write."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind a failed write: itself, or one it was raised from or during (torch's
    writer turns the OSError of the Python file it writes to into a RuntimeError raised while
    handling it)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Calls ``write(tmp_path)``, syncs the file to disk, then renames it over ``path``.

    A crash, a kill or a full disk leaves the old file or the new one, never half of one; a write
    the system refuses raises ``FileWriteError`` (the path and the reason, the old file intact).
    The temporary files of writers that were killed are removed first (``_remove_stale_temps``).
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except Exception as err:
        cause = _os_error(err)
        if cause is None:  # not the file system's refusal: a bug, which keeps its traceback
            raise
        raise FileWriteError(path, cause) from err
    finally:
        with contextlib.suppress(OSError):  # must not replace the error being raised
            tmp.unlink(missing_ok=True)


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` through a Python file object, for ``write_atomic``: given a path, torch's
    own writer reports a full disk as a bare RuntimeError ("unexpected pos ..."), while through
    a Python file the system's OSError (ENOSPC, EFBIG) stays attached for the message. torch is
    imported here, not at the top, so that train.py's early checks need no torch."""
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))
