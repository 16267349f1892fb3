"""Error analysis and calibration of every test: per-class scores, confused pairs, hardest
images, ECE with its reliability diagram, and temperature scaling through eval.py/predict.py."""

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch

from cifarlab.callbacks.eval_outputs import EvalOutputs
from cifarlab.errors import CifarlabError
from cifarlab.inference.calibration import fit_temperature, read_temperature
from cifarlab.inference.predict import predict
from cifarlab.review.analysis import analyse, most_confused_block
from cifarlab.review.report import print_accuracy_table
from cifarlab.run.jobs import evaluate

from .conftest import FOLDER_CLASSES, compose_config, eval_cfg

NAMES = ["a", "b", "c"]


def one_hot_logits(predicted: list[int], scale: float = 4.0) -> torch.Tensor:
    return scale * torch.nn.functional.one_hot(torch.tensor(predicted), 3).float()


def collected(images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, **kw) -> dict:
    outputs = EvalOutputs(**kw)
    for part in range(0, len(targets), 4):  # batches of 4: the hardest are picked per batch
        window = slice(part, part + 4)
        outputs.update(images[window], logits[window], targets[window])
    return outputs.compute()


def test_analysis_scores_pairs_and_hardest_images() -> None:
    # truth a a a a b b b b c c ; a->b twice, b->c once, c->a once (with low confidence)
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    logits = one_hot_logits([0, 0, 1, 1, 1, 1, 1, 2, 2, 0])
    logits[9] = torch.tensor([0.3, 0.0, 0.0])  # wrong but unsure: a low loss among the wrong
    images = torch.arange(10).float().view(10, 1, 1, 1).expand(10, 3, 2, 2)
    analysis, matrix, hard_images = analyse(collected(images, logits, targets), NAMES, 3)

    rows = {row["class"]: row for row in analysis["test/per_class"]}
    assert rows["a"]["recall"] == pytest.approx(0.5) and rows["a"]["precision"] == pytest.approx(
        2 / 3
    )
    assert rows["b"]["precision"] == pytest.approx(3 / 5) and rows["b"]["support"] == 4
    assert rows["c"]["f1"] == pytest.approx(2 * 0.5 * 0.5 / 1.0)
    assert analysis["test/confused_pairs"][0] == {
        "true": "a",
        "predicted": "b",
        "count": 2,
        "share": 0.5,
    }
    assert {(p["true"], p["predicted"]) for p in analysis["test/confused_pairs"][1:]} == {
        ("b", "c"),
        ("c", "a"),
    }
    assert matrix.sum() == 10 and matrix[0, 1] == 2
    # the three confident mistakes (images 2, 3, 7), not the unsure one (9)
    assert sorted(int(i) for i in hard_images[:, 0, 0, 0]) == [2, 3, 7]
    assert all(row["true"] != row["predicted"] for row in analysis["test/hardest"])
    assert (
        0 < analysis["test/ece"] < 1 and sum(b["count"] for b in analysis["test/reliability"]) == 10
    )


def test_temperature_fit_recovers_the_temperature_of_the_data() -> None:
    generator = torch.Generator().manual_seed(0)
    true_logits = 2 * torch.randn(4000, 5, generator=generator)
    targets = torch.multinomial(true_logits.softmax(dim=1), 1, generator=generator).flatten()
    assert fit_temperature(3 * true_logits, targets) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(true_logits / 2, targets) == pytest.approx(0.5, rel=0.1)


def test_many_classes_show_the_worst_and_best_and_the_most_confused_block(capsys) -> None:
    per_class = {f"class{i:03d}": i / 100 for i in range(100)}
    print_accuracy_table("hundred", 0.5, per_class)
    shown = capsys.readouterr().out
    assert "class000" in shown and "class099" in shown and "class050" not in shown
    assert "90 more" in shown and "overall" in shown
    matrix = torch.eye(30, dtype=torch.long) * 5
    matrix[3, 7] = matrix[12, 3] = 4
    block, names = most_confused_block(matrix, [f"c{i}" for i in range(30)], size=3)
    assert names == ["c3", "c7", "c12"] and block[0, 1] == 4 and block[2, 0] == 4


def test_every_test_writes_its_error_analysis(trained_lenet: dict) -> None:
    run = Path(trained_lenet["output_dir"])
    saved = json.loads((run / "metrics.json").read_text())
    assert [row["class"] for row in saved["test/per_class"]] == list(FOLDER_CLASSES)
    assert 0 <= saved["test/ece"] <= 1 and saved["test/nll"] > 0
    with open(run / "test_per_class.csv") as f:
        assert [r["class"] for r in csv.DictReader(f)] == list(FOLDER_CLASSES)
    with open(run / "test_confusion_matrix.csv") as f:
        matrix = [[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]]
    assert sum(map(sum, matrix)) == 12 * len(FOLDER_CLASSES)
    for png in ("test_reliability_diagram.png", "test_hardest_images.png"):
        assert (run / png).stat().st_size > 1000
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for path in events:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["images"]) | set(accumulator.Tags()["scalars"])
    assert {"test/reliability_diagram", "test/hardest_images", "test/ece"} <= tags


def test_calibrate_stores_a_temperature_that_predict_applies(
    trained_lenet: dict, folder_root: Path, tmp_path: Path, capsys
) -> None:
    ckpt = Path(trained_lenet["best_ckpt"])
    sidecar = Path(f"{ckpt}.temperature.json")
    before = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    plain = predict(
        compose_config(
            "predict",
            [
                f"ckpt_path={ckpt}",
                f"input={folder_root}/test",
                f"paths.output_dir={tmp_path / 'p0'}",
                "device=cpu",
            ],
        )
    )
    try:
        metrics = evaluate(eval_cfg(ckpt, tmp_path / "eval", "calibrate=true"))
        temperature = read_temperature(sidecar)
        assert temperature is not None and temperature > 0
        assert (
            hashlib.sha256(ckpt.read_bytes()).hexdigest() == before
        )  # the checkpoint is untouched
        calibration = metrics["test/calibration"]
        assert calibration["temperature"] == temperature
        assert calibration["before"]["acc"] == calibration["after"]["acc"] == metrics["test/acc"]
        assert "temperature" in capsys.readouterr().out
        calibrated = predict(
            compose_config(
                "predict",
                [
                    f"ckpt_path={ckpt}",
                    f"input={folder_root}/test",
                    f"paths.output_dir={tmp_path / 'p1'}",
                    "device=cpu",
                ],
            )
        )
        assert f"temperature {temperature:.4f}" in capsys.readouterr().out
        assert calibrated["temperature"] == temperature and plain["temperature"] is None
        first_plain, first_cal = plain["predictions"][0], calibrated["predictions"][0]
        assert first_cal["prediction"] == first_plain["prediction"]
        assert first_cal["probability"] != pytest.approx(first_plain["probability"], abs=1e-4)
        sidecar.write_text('{"temperature": -1}')
        with pytest.raises(CifarlabError, match="must be a number > 0"):
            predict(
                compose_config(
                    "predict",
                    [
                        f"ckpt_path={ckpt}",
                        f"input={folder_root}/test",
                        f"paths.output_dir={tmp_path / 'p2'}",
                        "device=cpu",
                    ],
                )
            )
    finally:
        sidecar.unlink(missing_ok=True)  # the checkpoint is shared with other tests
