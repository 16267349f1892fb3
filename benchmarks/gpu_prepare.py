"""Gets ``.device/`` ready for the GPU check and prints the device call's command prefix.

``../shared/gpu/prepare.sh`` copies the wheels of hydra-core, omegaconf and antlr4 and CIFAR-10 as
a zip of 60,000 JPEGs (61 MiB) into ``.device/``, which with the tracked files comes to about 64
MiB, the most a device call carries. A zip compresses each file alone, so every JPEG keeps its
~600 bytes of headers; in one gzip stream (a .tar.gz) the headers the files share compress away
and the same files take 18 MiB. This script repacks the zip so, removes it, and says what travels.
Only the standard library: it runs with any python3. From the project root:

    bash ../shared/gpu/prepare.sh && python3 benchmarks/gpu_prepare.py
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

LIMIT = 64 * 2**20  # what a device call carries: the working tree and the carried paths
ROOM = 16 * 2**20  # what this leaves free under it, for the tree to grow
PREFIX = (
    "python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/*.whl && "
    "export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 && "
    "python3 -m tarfile -e .device/cifar10-jpg.tar.gz /tmp/data/ && "
)


def repack(zip_path: Path, tar_path: Path) -> None:
    """The zip's files, same names and bytes, as a gzip-compressed tar (written atomically)."""
    partial = tar_path.with_name(tar_path.name + ".partial")
    with zipfile.ZipFile(zip_path) as source, tarfile.open(partial, "w:gz") as target:
        for member in source.infolist():
            if member.is_dir():
                continue
            data = source.read(member)
            info = tarfile.TarInfo(member.filename)
            info.size, info.mode = len(data), 0o644
            target.addfile(info, io.BytesIO(data))
    partial.replace(tar_path)


def travelling_bytes(root: Path) -> int:
    """Bytes a device call carries from ``root``: tracked files, untracked files git does not
    ignore, and ``.device/``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    files = [root / name for name in listed.decode().split("\0") if name]
    files += [p for p in (root / ".device").rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files if p.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project checkout")
    args = parser.parse_args(argv)
    device = args.root / ".device"
    zipped, packed = device / "cifar10-jpg.zip", device / "cifar10-jpg.tar.gz"
    if zipped.is_file():
        repack(zipped, packed)
        zipped.unlink()
    if not packed.is_file() or not list(device.glob("*.whl")):
        sys.exit(
            f"{device} lacks the wheels or CIFAR-10: run `bash ../shared/gpu/prepare.sh` from "
            "the project root first, then this script."
        )
    size = travelling_bytes(args.root)
    print(f"travels: {size / 2**20:.1f} MiB of the {LIMIT // 2**20} MiB a device call carries")
    if size > LIMIT - ROOM:
        sys.exit(
            f"{size / 2**20:.1f} MiB would travel, more than {(LIMIT - ROOM) // 2**20} MiB: "
            "find the large files (`git ls-files --others --exclude-standard`, .device/) first."
        )
    print('Carry .device (carry: [".device"]) and begin the command with\n  ' + PREFIX)


if __name__ == "__main__":
    main()
