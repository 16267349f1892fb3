"""predict.py: any picture in, classes out; class folders scored as eval.py scores them."""

import csv
import json
import os
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cifarlab.inference.predict
from cifarlab.data.pictures import gray_to_8bit
from cifarlab.errors import CifarlabError
from cifarlab.inference.inputs import find_inputs
from cifarlab.inference.predict import load_image, pick_device, predict

from .conftest import FOLDER_CLASSES, compose_config, run_script


def predict_config(ckpt: str, tmp_path: Path, *extra: str):
    return compose_config(
        "predict",
        [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path}", "device=cpu", "batch_size=7", *extra],
    )


def test_class_folder_is_scored_as_eval_scores_it(
    trained_lenet: dict, folder_root: Path, tmp_path: Path
) -> None:
    """32x32 images go through unchanged, so accuracy equals the run's own test accuracy."""
    summary = predict(
        predict_config(trained_lenet["best_ckpt"], tmp_path, f"input={folder_root}/test")
    )
    assert summary["files"] == summary["predicted"] == 12 * len(FOLDER_CLASSES)
    assert summary["accuracy"]["acc"] == pytest.approx(trained_lenet["test/acc"], abs=1e-6)
    assert summary["accuracy"]["acc_class"] == pytest.approx(
        trained_lenet["test/acc_class"], abs=1e-6
    )
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36 and {r["label"] for r in rows} == set(FOLDER_CLASSES)
    saved = json.loads((tmp_path / "predictions.json").read_text())
    first = saved["predictions"][0]
    assert len(first["top"]) == 3 and first["top"][0]["class"] == first["prediction"]
    assert sum(t["probability"] for t in first["top"]) == pytest.approx(1.0, abs=1e-4)


def test_any_picture_becomes_32x32_rgb(tmp_path: Path) -> None:
    # wide RGBA picture: transparent left quarter, red middle half, blue right quarter
    pixels = np.zeros((64, 128, 4), np.uint8)
    pixels[:, 32:96] = (255, 0, 0, 255)
    pixels[:, 96:] = (0, 0, 255, 255)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png")
    assert image.shape == (3, 32, 32) and image.dtype.__str__() == "torch.uint8"
    # shorter side 64 -> 32, width 128 -> 64, centre crop keeps only the red middle
    assert (image[:, :, 2:-2] == image.new_tensor([255, 0, 0]).view(3, 1, 1)).all()
    # fully transparent -> white; grayscale -> three equal channels
    Image.new("LA", (20, 50), (0, 0)).save(tmp_path / "clear.png")
    assert (load_image(tmp_path / "clear.png") == 255).all()
    Image.new("L", (40, 40), 77).save(tmp_path / "gray.jpg")
    gray = load_image(tmp_path / "gray.jpg")
    assert (gray - 77).abs().max() <= 1 and (gray[0] == gray[2]).all()


def test_bad_inputs_are_one_paragraph(trained_lenet: dict, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cases = {
        "input=null": "needs something to predict",
        f"input={tmp_path / 'empty'}": "folder without images",
        f"input={tmp_path / 'nothing'}/*.png": "matches no file",
        f"input={tmp_path / 'missing.png'}": "does not exist",
    }
    for override, message in cases.items():
        with pytest.raises(CifarlabError, match=message):
            predict(predict_config(trained_lenet["best_ckpt"], tmp_path / "out", override))


@pytest.mark.slow  # 13-52 s; moved out of the default suite to keep it under 5 minutes
def test_unreadable_file_is_named_others_still_predicted(
    trained_lenet: dict, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGBA", (300, 200), (200, 10, 10, 128)).save(photos / "big.png")
    (photos / "broken.jpg").write_text("not a jpeg")
    result = run_script(
        "predict.py",
        f"ckpt_path={trained_lenet['best_ckpt']}",
        f"input={photos}",
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert f"error: {photos / 'broken.jpg'}: not an image PIL can read" in result.stderr
    assert "big.png" in result.stdout and "1 of 2 files predicted" in result.stdout
    saved = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [Path(r["file"]).name for r in saved["predictions"]] == ["big.png"]
    assert len(saved["failed"]) == 1


def test_pick_device_names_devices_this_machine_lacks() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert pick_device("auto").type == expected
    with pytest.raises(CifarlabError, match="device='gpu0' is not a device torch knows"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(CifarlabError, match="device=cuda:1 needs a CUDA GPU"):
            pick_device("cuda:1")


def gradient16(width: int = 96, height: int = 64) -> np.ndarray:
    """A 16-bit gray picture using the whole range, as a 16-bit photo does."""
    ramp = np.linspace(0, 65535, width * height).reshape(height, width)
    return np.rint(ramp).astype(np.uint16)


@pytest.mark.parametrize(
    ("name", "to_file"),
    [
        ("i16.png", lambda g: Image.fromarray(g)),  # opens as I;16
        ("i16b.tif", lambda g: Image.fromarray(g.astype(">u2"))),  # opens as I;16B
        ("i32.tif", lambda g: Image.fromarray(g.astype(np.int32))),  # I holding 16-bit values
        ("f.tif", lambda g: Image.fromarray((g / 65535).astype(np.float32))),  # F in 0..1
    ],
)
def test_wide_gray_picture_predicts_as_its_8bit_version(tmp_path: Path, name: str, to_file) -> None:
    """Pillow's convert("RGB") clips these to 0..255 (a 16-bit photo turns white); scaled by their
    range they give the 8-bit picture's tensor within one level (1/255)."""
    wide = gradient16()
    to_file(wide).save(tmp_path / name)
    Image.fromarray(np.rint(wide / 257).astype(np.uint8), "L").save(tmp_path / "8bit.png")
    with Image.open(tmp_path / name) as opened:
        assert opened.mode == {"i16.png": "I;16", "i16b.tif": "I;16B", "i32.tif": "I"}.get(
            name, "F"
        )
    expected = load_image(tmp_path / "8bit.png").int()
    assert (load_image(tmp_path / name).int() - expected).abs().max() <= 1
    assert expected.min() < 100 < expected.max()  # a gradient, not a flat picture


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([0, 25700, 65535], np.uint16, [0, 100, 255]),  # 16-bit: v / 257, even when dark
        ([0, 100, 200], np.uint16, [0, 0, 1]),
        ([0, 100, 255], np.int32, [0, 100, 255]),  # 8-bit values stored as I
        ([0, 25700, 65535], np.int32, [0, 100, 255]),  # 16-bit values stored as I
        ([-5, 0, 5], np.int32, [0, 128, 255]),  # beyond 0..65535: its own min..max
        ([0.0, 0.5, 1.0, np.nan], np.float32, [0, 128, 255, 0]),  # F in 0..1; NaN the bottom
        ([0.0, 1.5, 255.0], np.float32, [0, 2, 255]),  # F in 0..255
    ],
)
def test_wide_gray_scaling_rule(values: list, dtype, expected: list[int]) -> None:
    assert gray_to_8bit(np.array([values], dtype=dtype)).tolist() == [expected]


def test_symlink_loops_and_links_give_each_real_file_once(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    (photos / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (photos / "a.png", photos / "sub" / "b.png", elsewhere / "c.png"):
        Image.new("RGB", (8, 8)).save(path)
    os.symlink(photos, photos / "sub" / "loop")  # a loop back to the top
    os.symlink(photos / "a.png", photos / "sub" / "again.png")  # a second name for a.png
    os.symlink(elsewhere, photos / "linked")  # a linked folder is part of the input

    def found(spec) -> list[str]:
        return [item.path.relative_to(photos).as_posix() for item in find_inputs(spec, ["x"])]

    assert found(str(photos)) == ["a.png", "linked/c.png", "sub/b.png"]
    assert "1 reached again through a link" in capsys.readouterr().out
    # a glob's ** does not descend into links to folders, so a loop cannot multiply matches
    assert found(f"{photos}/**/*.png") == ["a.png", "sub/b.png"]
    assert found([str(photos / "a.png"), str(photos / "sub" / "again.png")]) == ["a.png"]


def _address_space() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))


@contextmanager
def address_space_cap(extra: int) -> Iterator[None]:
    """Lets this process map at most ``extra`` more bytes: an allocation past it fails with
    MemoryError instead of paging the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is Linux's")
def test_huge_or_extreme_pictures_are_read_in_bounded_memory(tmp_path: Path) -> None:
    """A 1,000,000x2 strip resized whole to a 32-pixel short side is 16,000,000x32 (2 GB); an
    8000x8000 JPEG decoded whole is 64 MB and 256 MB as RGB. Both fit in 160 MB."""
    strip = np.zeros((2, 1_000_000), np.uint8)
    strip[:, 499_999:500_001] = 200  # the centre square
    Image.fromarray(strip).save(tmp_path / "strip.png")
    Image.linear_gradient("L").resize((8000, 8000)).save(tmp_path / "big.jpg")
    with address_space_cap(160 * 2**20):
        centre = load_image(tmp_path / "strip.png")
        big = load_image(tmp_path / "big.jpg")
    assert (centre == 200).all()
    # linear_gradient runs from black at the top to white at the bottom
    rows = big[0].float().mean(dim=1)
    assert rows[0] < 20 and rows[-1] > 235 and (rows.diff() >= 0).all()


def test_picture_over_the_decompression_bomb_limit_is_one_error_line(
    trained_lenet: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (30, 30), (200, 10, 10)).save(photos / "small.png")
    Image.new("RGB", (40, 40), (10, 10, 200)).save(photos / "large.png")
    # 1,600 pixels: over the limit, under twice it (where Pillow itself only warns)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    summary = predict(
        predict_config(trained_lenet["best_ckpt"], tmp_path / "out", f"input={photos}")
    )
    assert [Path(r["file"]).name for r in summary["predictions"]] == ["small.png"]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "large.png" in errors[0]
    assert "decompression-bomb limit of 1000" in errors[0]


def test_predictions_csv_keeps_what_was_predicted_before_a_crash(
    trained_lenet: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(9):
        Image.new("RGB", (32, 32), (20 * i, 0, 0)).save(photos / f"{i}.png")
    read = cifarlab.inference.predict.load_image

    def crash_on_the_last(path: Path, size: int) -> torch.Tensor:
        if path.name == "8.png":
            raise RuntimeError("the process dies here")
        return read(path, size)

    monkeypatch.setattr(cifarlab.inference.predict, "load_image", crash_on_the_last)
    with pytest.raises(RuntimeError, match="the process dies here"):
        predict(predict_config(trained_lenet["best_ckpt"], tmp_path / "out", f"input={photos}"))
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    # batch_size=7: the first batch was written before the second one crashed
    assert [Path(r["file"]).name for r in rows] == [f"{i}.png" for i in range(7)]
