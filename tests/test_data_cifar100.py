"""data.source=cifar100 on tiny files in torchvision's CIFAR-100 format (no download here):
fine and coarse labels, class subsets, the restricted unpickler, and train, eval, predict and
export end to end with 100 classes."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.data import CIFAR10DataModule
from cifarlab.data.cifar import CIFAR100_COARSE, CIFAR100_FINE
from cifarlab.errors import CifarlabError
from cifarlab.inference.export import export
from cifarlab.inference.predict import predict
from cifarlab.run.jobs import evaluate, train

from .conftest import compose_config, eval_cfg, make_cifar100


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cifar100(tmp_path_factory.mktemp("cifar100"))


def prepared(root: Path, **kwargs) -> CIFAR10DataModule:
    dm = CIFAR10DataModule(source="cifar100", root=str(root), val_size=20, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def test_fine_and_coarse_labels_and_class_subsets(cifar100_root: Path) -> None:
    fine = prepared(cifar100_root)
    assert fine.class_names == list(CIFAR100_FINE) and len(fine.class_names) == 100
    test_images, test_labels = fine.splits["test"].images, fine.splits["test"].labels
    assert sorted(test_labels.tolist()) == list(range(100)) and test_images.shape[1:] == (3, 32, 32)
    coarse = prepared(cifar100_root, label_type="coarse")
    assert coarse.class_names == list(CIFAR100_COARSE)
    # superclasses 0-1 hold the images of fine classes 0-9 (fine f -> coarse f // 5 in these files)
    assert torch.bincount(coarse.splits["test"].labels).tolist() == [5] * 20
    superclass = prepared(cifar100_root, label_type="coarse", classes=list(CIFAR100_COARSE[:2]))
    first_ten = prepared(cifar100_root, classes=list(CIFAR100_FINE[:10]))

    def pictures(dm: CIFAR10DataModule) -> list[bytes]:
        return sorted(image.numpy().tobytes() for image in dm.splits["test"].images)

    assert pictures(superclass) == pictures(first_ten)
    assert {p.name for p in (cifar100_root / "cifar-100-python").glob("cifarlab-*.pt")} >= {
        "cifarlab-cifar100-fine-train-v4.pt",
        "cifarlab-cifar100-coarse-test-v4.pt",
    }
    subset = prepared(cifar100_root, classes=["whale", "apple"])
    assert subset.class_names == ["apple", "whale"] and len(subset.splits["test"].labels) == 2


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_pickle_that_names_code_is_not_run(tmp_path: Path) -> None:
    root = make_cifar100(tmp_path)
    with open(root / "cifar-100-python" / "test", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "fine_labels": [_RunsCode()]}, f)
    with pytest.raises(CifarlabError, match="is not a CIFAR-100 batch: its pickle asks for"):
        prepared(root)


@pytest.mark.slow  # about 8 s on two idle cores: 100-class figures and four entry points
def test_train_eval_predict_export_with_100_classes(
    cifar100_root: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    metrics = train(
        compose_config(
            "train",
            [
                "model=lenet",
                "data.source=cifar100",
                f"data.root={cifar100_root}",
                "data.val_size=20",
                "data.batch_size=32",
                "trainer.max_epochs=1",
                "trainer.accelerator=cpu",
                "trainer.enable_model_summary=false",
                "trainer.enable_progress_bar=false",
                "callbacks.progress_bar=null",
                f"paths.output_dir={run}",
            ],
        )
    )
    shown = capsys.readouterr().out
    assert "90 more" in shown and "overall" in shown  # worst and best five, not all 100
    assert len(metrics["test/acc_class"]) == len(metrics["test/per_class"]) == 100
    assert (run / "test_confusion_matrix_most_confused.png").stat().st_size > 1000
    matrix = (run / "test_confusion_matrix.csv").read_text().splitlines()
    assert len(matrix) == 101 and matrix[0].count(",") == 100
    ckpt = metrics["best_ckpt"] or metrics["last_ckpt"]
    evaluated = evaluate(eval_cfg(ckpt, tmp_path / "e"))
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    pictures = tmp_path / "pictures"
    (pictures / "apple").mkdir(parents=True)
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(pictures / "apple" / "a.png")
    predicted = predict(
        compose_config(
            "predict",
            [f"ckpt_path={ckpt}", f"input={pictures}", f"paths.output_dir={tmp_path / 'p'}"],
        )
    )
    assert predicted["predictions"][0]["prediction"] in CIFAR100_FINE
    exported = export(
        compose_config(
            "export", [f"ckpt_path={ckpt}", "format=torchscript", f"output={tmp_path / 'm.pt'}"]
        )
    )
    scripted = torch.jit.load(exported["path"])
    assert scripted(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert json.loads(Path(exported["info_path"]).read_text())["class_names"] == list(CIFAR100_FINE)
