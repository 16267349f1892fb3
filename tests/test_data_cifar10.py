"""Reading torchvision's CIFAR-10 pickles: every form the files come in is read, and a file that
asks the unpickler for anything but numpy's arrays is refused before it can run."""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cifarlab.data import load_split
from cifarlab.data.cifar import read_cifar10
from cifarlab.errors import CifarlabError

from .conftest import make_cifar10


def _py2_str(data: bytes) -> bytes:
    """A Python 2 ``str`` as protocol 2 writes it (SHORT_BINSTRING / BINSTRING)."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    return b"J" + struct.pack("<i", value)


def python2_batch(entry: dict) -> bytes:
    """A batch as the real files are: Python 2's ``cPickle.dump(entry, f, 2)`` of str keys, a list
    of ints and a uint8 array (numpy.core's ``_reconstruct``, data as a py2 str), opcode by
    opcode (no memo), since Python 3 cannot write Python 2's str."""
    data, labels = entry["data"], entry["labels"]
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + _py2_int(0)
        + b"\x85"  # TUPLE1: shape (0,)
        + _py2_str(b"b")
        + b"\x87R("  # TUPLE3, REDUCE, MARK of the state
        + _py2_int(1)
        + _py2_int(data.shape[0])
        + _py2_int(data.shape[1])
        + b"\x86cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + _py2_int(0)
        + _py2_int(1)
        + b"\x87R("
        + _py2_int(3)
        + _py2_str(b"|")
        + b"NNN"
        + _py2_int(-1)
        + _py2_int(-1)
        + _py2_int(0)
        + b"tb\x89"  # TUPLE, BUILD the dtype, NEWFALSE (not Fortran order)
        + _py2_str(data.tobytes())
        + b"tb"  # TUPLE, BUILD the array
    )
    items = (
        _py2_str(b"batch_label")
        + _py2_str(b"training batch 1 of 5")
        + _py2_str(b"labels")
        + b"]("
        + b"".join(_py2_int(label) for label in labels)
        + b"e"
        + _py2_str(b"data")
        + array
    )
    return b"\x80\x02}(" + items + b"u."


FORMS: dict[str, Callable[[dict], bytes]] = {
    "python2": python2_batch,
    **{f"protocol{p}": lambda entry, p=p: pickle.dumps(entry, protocol=p) for p in (2, 4, 5)},
}


@pytest.mark.parametrize("form", FORMS)
def test_batches_are_read_in_every_form_the_files_come_in(tmp_path: Path, form: str) -> None:
    root = make_cifar10(tmp_path)
    folder = root / "cifar-10-batches-py"
    expected = read_cifar10(root, "train")
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f)
        (folder / name).write_bytes(FORMS[form](entry))
        with open(folder / name, "rb") as f:  # what torchvision itself reads
            assert np.array_equal(pickle.load(f, encoding="latin1")["data"], entry["data"])
    again = read_cifar10(root, "train")
    assert np.array_equal(again.images.numpy(), expected.images.numpy())
    assert again.labels.tolist() == expected.labels.tolist()


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_batch_that_would_run_code_is_refused_unrun(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path / "data")
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    with open(batch, "rb") as f:
        entry = pickle.load(f)
    marker = tmp_path / "code-ran"
    batch.write_bytes(pickle.dumps({**entry, "batch_label": RunsCode(marker)}))

    with pytest.raises(CifarlabError, match=f"{batch} is not a CIFAR-10 batch: .* posix.system"):
        load_split("cifar10", root, "train")
    assert not marker.exists()

    pickle.loads(batch.read_bytes())  # the file is really dangerous to a plain unpickler
    assert marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"\x80\x04\x95", pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]})],
    ids=["truncated", "wrong-shape"],
)
def test_a_damaged_batch_is_named(tmp_path: Path, content: bytes) -> None:
    root = make_cifar10(tmp_path)
    batch = root / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(content)
    with pytest.raises(CifarlabError, match=f"{batch} (cannot be read as|is not) a CIFAR-10 batch"):
        read_cifar10(root, "test")
