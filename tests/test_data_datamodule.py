"""cifarlab.data.datamodule: a run's splits, classes and the loaders Lightning asks for."""

import itertools
import json
import re
import warnings
from pathlib import Path

import pytest
import torch

import cifarlab.data.batches as batches_module
from cifarlab.data import NORMALIZATIONS, Augment, CIFAR10DataModule, class_mixed_order
from cifarlab.data.batches import epoch_draws
from cifarlab.errors import CifarlabError

from .conftest import FOLDER_CLASSES, compose_config, quick_overrides
from .data_helpers import datamodule


def test_folder_splits_are_disjoint_and_the_same_every_run(folder_root: Path) -> None:
    a, b = datamodule(folder_root), datamodule(folder_root)
    assert a.class_names == list(FOLDER_CLASSES)
    assert len(a.splits["train"].labels) == 3 * 40 - 24
    assert len(a.splits["val"].labels) == 24
    assert len(a.splits["test"].labels) == 3 * 12
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].images, b.splits[split].images)
    train = {bytes(x.numpy()) for x in a.splits["train"].images}
    assert not any(bytes(x.numpy()) in train for x in a.splits["val"].images)
    other_seed = datamodule(folder_root, split_seed=1)
    assert not torch.equal(other_seed.splits["val"].images, a.splits["val"].images)


def test_every_split_mixes_the_classes_from_its_first_batch(folder_root: Path) -> None:
    """A folder is read class by class; ``limit_val_batches``/``limit_test_batches`` score the
    first batches, which must not be one class."""
    dm = datamodule(folder_root, eval_batch_size=6)
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        _, y = next(iter(loader))
        assert set(y.tolist()) == {0, 1, 2}
    test = dm.splits["test"].labels  # 12 images per class, spread evenly
    for end in range(3, 37, 3):
        assert test[:end].bincount(minlength=3).tolist() == [end // 3] * 3


def test_class_mixed_order_spreads_unequal_classes_evenly() -> None:
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    order = class_mixed_order(labels)
    assert torch.equal(order.sort().values, torch.arange(17))
    mixed = labels[order]
    for c, count in enumerate((10, 5, 2)):
        assert torch.equal(order[mixed == c], (labels == c).nonzero().flatten())  # kept in order
        for end in range(1, 18):
            assert abs(int((mixed[:end] == c).sum()) - end * count / 17) <= 1


def test_a_class_without_images_in_the_evaluated_part_is_reported_as_none(
    folder_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cifarlab.run.jobs import train
    from cifarlab.sweeps.rows import job_row

    overrides = [
        *quick_overrides(folder_root, tmp_path),
        "trainer.max_epochs=1",
        "trainer.limit_test_batches=1",
        "data.eval_batch_size=2",  # the first test batch holds two of the three classes
    ]
    metrics = train(compose_config("train", overrides))
    per_class = metrics["test/acc_class"]
    absent = [name for name, acc in per_class.items() if acc is None]
    assert len(absent) == 1 and set(per_class) == set(FOLDER_CLASSES)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test/acc_class"][absent[0]] is None
    table = capsys.readouterr().out
    assert re.search(rf"{absent[0]}\s*│\s*-\s*│", table), table
    assert job_row(tmp_path)["worst_class"] in set(per_class) - set(absent)


def test_class_subset_remaps_labels_in_source_order(cifar10_root: Path) -> None:
    dm = datamodule(cifar10_root, source="cifar10", val_size=10, classes=["bird", "airplane"])
    assert dm.class_names == ["airplane", "bird"]
    assert dm.num_classes == 2
    test = dm.splits["test"]
    assert sorted(test.labels.unique().tolist()) == [0, 1]
    assert len(test.labels) == 6
    full = datamodule(cifar10_root, source="cifar10", val_size=10)
    birds = full.splits["test"].images[full.splits["test"].labels == 2]
    assert torch.equal(test.images[test.labels == 1], birds)
    # the validation images of a subset are the full run's validation images of those classes
    full_val, val = full.splits["val"], dm.splits["val"]
    for new, old in ((0, 0), (1, 2)):
        assert torch.equal(val.images[val.labels == new], full_val.images[full_val.labels == old])


@pytest.mark.parametrize(
    ("classes", "needle"),
    [
        (["bird", "unicorn"], "unicorn"),
        (["bird", "bird", "cat"], "more than once"),
        (["bird"], "at least 2"),
    ],
)
def test_bad_class_lists_are_refused(folder_root: Path, classes: list[str], needle: str) -> None:
    with pytest.raises(CifarlabError, match=needle):
        _ = CIFAR10DataModule(source="folder", root=str(folder_root), classes=classes).class_names


@pytest.mark.parametrize("normalize", sorted(NORMALIZATIONS))
def test_batches_are_normalized_per_channel(folder_root: Path, normalize: str) -> None:
    dm = datamodule(folder_root, normalize=normalize, eval_batch_size=1000)
    x, y = next(iter(dm.test_dataloader()))
    raw = dm.splits["test"].images.float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS[normalize])
    assert x.dtype == torch.float32
    assert torch.allclose(x, (raw - mean) / std, atol=1e-5)
    assert torch.equal(y, dm.splits["test"].labels)


def test_train_batches_shuffle_by_epoch_and_cover_every_image(folder_root: Path) -> None:
    dm = datamodule(folder_root)
    batches = dm.train_dataloader()
    epoch = [0]
    batches.epoch = lambda: epoch[0]
    first = torch.cat([y for _, y in batches])
    again = torch.cat([y for _, y in batches])
    epoch[0] = 1
    second = torch.cat([y for _, y in batches])
    assert len(batches) == -(-len(first) // 16)
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    assert torch.equal(first.sort().values, dm.splits["train"].labels.sort().values)


def test_the_last_partial_training_batch_is_dropped(folder_root: Path) -> None:
    dm = datamodule(folder_root, batch_size=20, eval_batch_size=10)  # 96 training images
    train = list(dm.train_dataloader())
    assert len(dm.train_dataloader()) == len(train) == 4
    assert {len(y) for _, y in train} == {20}
    val = list(dm.val_dataloader())  # evaluation keeps every image
    assert sum(len(y) for _, y in val) == 24 and len(dm.val_dataloader()) == 3
    keep = datamodule(folder_root, batch_size=20, drop_last=False).train_dataloader()
    assert [len(y) for _, y in keep] == [20, 20, 20, 20, 16] and len(keep) == 5
    # with no full batch, the one partial batch stays (its shape never changes)
    small = datamodule(folder_root, batch_size=200).train_dataloader()
    assert [len(y) for _, y in small] == [96] and len(small) == 1


def test_compiled_model_is_not_recompiled_over_two_epochs(
    folder_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model.compile`` with a backend that counts compilations: a last partial batch makes
    Dynamo compile again, for a dynamic batch size."""
    import lightning as L

    from cifarlab.training.module import ClassifierModule

    compilations = []

    def counting_backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        compilations.append(graph)
        return graph.forward

    compile_with = torch.compile  # nn.Module.compile calls it: given the counting backend here
    monkeypatch.setattr(
        torch, "compile", lambda model, **kwargs: compile_with(model, backend=counting_backend)
    )
    torch.compiler.reset()
    dm = datamodule(folder_root, batch_size=20, augment=True)  # 96 = 4 x 20 + 16
    module = ClassifierModule(
        model={"name": "lenet", "width": 4, "compile": True},
        class_names=dm.class_names,
        optimizer={"name": "sgd", "lr": 0.01},
    )
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    assert len(compilations) == 1
    assert trainer.global_step == 8


def test_augment_options(folder_root: Path) -> None:
    assert datamodule(folder_root, augment=True).augmentation == "crop_flip"
    assert datamodule(folder_root, augment=False).augmentation == "none"
    flip_only = datamodule(folder_root, augment="flip", crop_padding=2, flip_mode="alternate")
    assert flip_only.augmentation == "flip"
    assert flip_only.train_augment == Augment(flip=True, padding=2, flip_mode="alternate")


def test_augmented_run_end_to_end(
    folder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A default-suite run (seconds) with every augmentation option set, which reach the training
    batches: each epoch's draws are recorded on their way into ``TensorBatches``."""
    from cifarlab.run.jobs import train

    recorded: list[tuple[Augment, torch.Tensor]] = []

    def recording_draws(n: int, augment: Augment, **kwargs) -> torch.Tensor:
        draws = epoch_draws(n, augment, **kwargs)
        if kwargs["shuffle"]:  # training batches
            recorded.append((augment, draws))
        return draws

    monkeypatch.setattr(batches_module, "epoch_draws", recording_draws)
    overrides = [
        *quick_overrides(folder_root, tmp_path),
        "model=bn_cnn",
        "model.width=8",
        "trainer.max_epochs=4",
        "data.augment=true",
        "data.flip_mode=alternate",
        "data.pad_mode=reflect",
        "data.crop_padding=2",
    ]
    metrics = train(compose_config("train", overrides))
    assert metrics["status"] == "completed" and metrics["epochs"] == 4
    assert metrics["test/acc"] >= 0.9
    assert len(recorded) == 4  # one draw per epoch
    configured = Augment(crop=True, flip=True, padding=2, pad_mode="reflect", flip_mode="alternate")
    assert {augment for augment, _ in recorded} == {configured}
    offsets = torch.stack([draws[1:3] for _, draws in recorded])
    assert offsets.min() == 0 and offsets.max() == 4  # crops anywhere within 2 pixels
    flipped = [dict(zip(d[0].tolist(), d[3].tolist(), strict=True)) for _, d in recorded]
    assert 0 < sum(flipped[0].values()) < len(flipped[0])  # a random half in epoch 0
    for before, after in itertools.pairwise(flipped):  # then the other way every epoch
        assert all(after[i] == 1 - before[i] for i in before.keys() & after.keys())


def test_a_val_size_the_data_cannot_take_is_refused(folder_root: Path) -> None:
    dm = CIFAR10DataModule(source="folder", root=str(folder_root), val_size=120)
    with pytest.raises(CifarlabError, match="val_size=120"):
        dm.setup()


def test_no_validation_images_means_no_validation_and_no_warning(folder_root: Path) -> None:
    """``data.val_size=0`` (the fastnet recipes): the fit skips validation without a word. Before,
    Lightning's evaluation loop warned "Total length of `TensorBatches` across ranks is zero"."""
    import lightning as L

    from cifarlab.training.module import ClassifierModule

    def fit(dm: CIFAR10DataModule) -> L.Trainer:
        module = ClassifierModule(
            model={"name": "lenet", "width": 4},
            class_names=dm.class_names,
            optimizer={"name": "sgd", "lr": 0.01},
        )
        trainer = L.Trainer(
            max_epochs=1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, datamodule=dm)
        said = [str(w.message) for w in caught]
        assert not [m for m in said if "is zero" in m or "val_dataloader" in m], said
        return trainer

    trainer = fit(datamodule(folder_root, val_size=0))
    assert trainer.global_step == 120 // 16  # every training image, in full batches
    assert trainer.limit_val_batches == 0 and not trainer.enable_validation
    assert "val/acc" not in trainer.callback_metrics
    # with validation images, the same fit validates
    trainer = fit(datamodule(folder_root, val_size=24))
    assert trainer.limit_val_batches == 1.0 and "val/acc" in trainer.callback_metrics


def test_splits_are_decoded_once_for_fit_and_test(
    folder_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning calls prepare_data again for ``trainer.test`` after ``fit``: the process already
    holds the splits then, and loads nothing a second time."""
    import cifarlab.data.datamodule as datamodule_module

    loaded: list[str] = []

    def counted_load(*args: object) -> object:
        loaded.append(str(args[2]))
        return load_split(*args)

    load_split = datamodule_module.load_split
    monkeypatch.setattr(datamodule_module, "load_split", counted_load)
    dm = datamodule(folder_root)  # prepare_data and setup, as for fit
    dm.prepare_data()  # as for trainer.test
    dm.setup("test")
    assert sorted(loaded) == ["test", "train"]
    assert len(dm.test_dataloader()) > 0
