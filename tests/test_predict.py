"""predict.py: any picture in, classes out; class folders scored as eval.py scores them."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.errors import CifarlabError
from cifarlab.predict import load_image, pick_device, predict

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
