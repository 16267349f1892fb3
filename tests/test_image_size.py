"""data.image_size: a folder of pictures of any size and mode becomes square RGB at that size once,
at cache time, as predict.py converts a picture; every model takes the size, and predict.py and
export.py use the checkpoint's."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.data import CIFAR10DataModule
from cifarlab.inference.export import export
from cifarlab.inference.predict import load_image, predict
from cifarlab.models import MODELS, build_model
from cifarlab.run.jobs import train

from .conftest import FOLDER_CLASSES, class_images, compose_config, quick_overrides


def phone_photos(root: Path, n_train: int = 16, n_test: int = 4) -> Path:
    """Class-coloured pictures of other sizes and modes: 60x45 RGB, 64x64 palette and 45x60
    RGBA images."""
    rng = np.random.default_rng(3)
    for split, count in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(FOLDER_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, pixels in enumerate(class_images(label, count, rng)):
                picture = Image.fromarray(pixels).resize((60, 45) if i % 3 == 0 else (64, 64))
                if i % 3 == 1:
                    picture = picture.convert("P")
                elif i % 3 == 2:
                    picture = picture.resize((45, 60)).convert("RGBA")
                picture.save(folder / f"{i:04d}.png")
    return root


def test_folder_images_are_converted_once_as_predict_converts_them(tmp_path: Path) -> None:
    root = phone_photos(tmp_path / "photos", n_train=3, n_test=3)
    dm = CIFAR10DataModule(source="folder", root=str(root), val_size=2, image_size=24)
    dm.prepare_data()
    dm.setup()
    test = dm.splits["test"]
    assert test.images.shape[1:] == (3, 24, 24)
    expected = {load_image(p, 24).numpy().tobytes() for p in (root / "test").rglob("*.png")}
    assert {image.numpy().tobytes() for image in test.images} == expected
    assert (root / ".cifarlab-cache" / "cifarlab-test-24px-v4.pt").is_file()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_takes_the_image_size_and_100_classes(name: str) -> None:
    width = {"lenet": 6, "fc512": 32, "bn_cnn": 8, "fastnet": 16, "resnet": 8}[name]
    net = build_model(name, 100, width, image_size=48).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 48, 48)).shape == (2, 100)


def test_a_folder_of_other_sizes_trains_predicts_and_exports(tmp_path: Path) -> None:
    root = phone_photos(tmp_path / "photos")
    metrics = train(
        compose_config(
            "train",
            [*quick_overrides(root, tmp_path / "run"), "model=lenet", "data.image_size=40"],
        )
    )
    assert metrics["status"] == "completed" and metrics["test/acc"] > 0.5
    ckpt = metrics["best_ckpt"]
    summary = predict(
        compose_config(
            "predict",
            [f"ckpt_path={ckpt}", f"input={root}/test", f"paths.output_dir={tmp_path / 'p'}"],
        )
    )
    assert summary["accuracy"]["acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    exported = export(
        compose_config(
            "export", [f"ckpt_path={ckpt}", "format=torchscript", f"output={tmp_path / 'm.pt'}"]
        )
    )
    assert exported["input"]["shape"] == ["batch", 3, 40, 40]
    assert torch.jit.load(exported["path"])(torch.zeros(1, 3, 40, 40)).shape == (1, 3)
