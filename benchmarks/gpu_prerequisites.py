"""What the GPU check needs of the machine it lands on, said in one line before anything runs.

torch.compile builds native code when it first runs a graph: on a GPU, Triton compiles a small C
launcher for its kernels with ``$CC`` or else ``gcc`` or ``clang`` from PATH (triton's
``runtime/build.py``); on the CPU, Inductor compiles C++ with ``$CXX`` or ``g++`` (torch's
``_inductor/cpp_builder.py``). Both include ``Python.h`` from the interpreter's include folder
(``sysconfig.get_paths()["include"]``). A bare machine may lack any of them, so the check looks
first and skips the compiled parts with the reason instead of failing in each.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

C_COMPILERS = ("gcc", "clang", "cc")  # after $CC; triton takes gcc, then clang
CXX_COMPILERS = ("g++", "clang++", "c++")  # after $CXX; Inductor's default search is g++


def find_compiler(env_var: str, names: tuple[str, ...], path: str | None) -> str | None:
    """``$env_var`` when set, else the first of ``names`` on ``path`` (default: PATH)."""
    for name in (os.environ.get(env_var), *names):
        found = shutil.which(name, path=path) if name else None
        if found:
            return found
    return None


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@dataclass
class Prerequisites:
    """The versions of the GPU stack, and the compilers and header that torch.compile needs."""

    torch: str
    triton: str
    cuda: str
    device: str
    c_compiler: str | None
    cxx_compiler: str | None
    python_h: Path

    @property
    def has_python_h(self) -> bool:
        return self.python_h.is_file()

    def compile_missing(self, device: str) -> str | None:
        """Why torch.compile cannot run on ``device`` ("cuda" or "cpu") here; None if it can."""
        compiler, kind, env = (
            (self.c_compiler, "C compiler", "$CC, " + ", ".join(C_COMPILERS))
            if device == "cuda"
            else (self.cxx_compiler, "C++ compiler", "$CXX, " + ", ".join(CXX_COMPILERS))
        )
        missing = [] if compiler else [f"a {kind} (none of {env} on PATH)"]
        if not self.has_python_h:
            missing.append(f"Python.h (not in {self.python_h.parent})")
        if not missing:
            return None
        return "torch.compile needs " + " and ".join(missing)

    def line(self) -> str:
        def found(value: str | Path | None, present: bool) -> str:
            return str(value) if present else "missing"

        return (
            f"prerequisites: torch {self.torch}, triton {self.triton}, CUDA {self.cuda} "
            f"({self.device}); C compiler {found(self.c_compiler, bool(self.c_compiler))}, "
            f"C++ compiler {found(self.cxx_compiler, bool(self.cxx_compiler))}, "
            f"Python.h {found(self.python_h, self.has_python_h)}"
        )


def prerequisites(path: str | None = None, include_dir: str | None = None) -> Prerequisites:
    """Looks on ``path`` (default: PATH) for the compilers and in ``include_dir`` (default: this
    interpreter's include folder) for Python.h."""
    include = Path(include_dir or sysconfig.get_paths()["include"])
    cuda = torch.cuda.is_available()
    return Prerequisites(
        torch=torch.__version__,
        triton=package_version("triton"),
        cuda=torch.version.cuda or "none (a CPU build of torch)",
        device=torch.cuda.get_device_name() if cuda else "no CUDA device",
        c_compiler=find_compiler("CC", C_COMPILERS, path),
        cxx_compiler=find_compiler("CXX", CXX_COMPILERS, path),
        python_h=include / "Python.h",
    )
