import json
import os
import re
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

import cifarlab.data as data
from cifarlab.data import (
    CIFAR10_CLASSES,
    NORMALIZATIONS,
    Augment,
    CIFAR10DataModule,
    TensorBatches,
    cache_path,
    class_mixed_order,
    load_split,
    pad_images,
)
from cifarlab.errors import CifarlabError

from .conftest import FOLDER_CLASSES, compose_config, make_cifar10, make_folder, quick_overrides


def datamodule(root: Path, **kwargs) -> CIFAR10DataModule:
    kwargs = {"source": "folder", "root": str(root), "val_size": 24, "batch_size": 16, **kwargs}
    dm = CIFAR10DataModule(**kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


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
    from cifarlab.run import train
    from cifarlab.sweep import job_row

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


def test_cifar10_format_is_read_with_its_labels(cifar10_root: Path) -> None:
    dm = datamodule(cifar10_root, source="cifar10", val_size=10)
    assert dm.class_names == list(CIFAR10_CLASSES)
    assert len(dm.splits["train"].labels) == 5 * 20 - 10
    assert torch.equal(dm.splits["test"].labels.bincount(), torch.full((10,), 3))
    # colour channel label % 3 is the bright one in the generated images
    test = dm.splits["test"]
    brightest = test.images.float().mean(dim=(2, 3)).argmax(dim=1)
    assert torch.equal(brightest, test.labels % 3)


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


def crops_of(images: torch.Tensor, pad: int = 4, mode: str = "zeros") -> torch.Tensor:
    """Every crop of every padded image, ``(n, c, dy, dx, h, w)``, built independently of
    TensorBatches (torch's own padding, then unfold)."""
    torch_mode = "constant" if mode == "zeros" else mode
    padded = torch.nn.functional.pad(images.float(), (pad,) * 4, mode=torch_mode)
    return padded.unfold(2, 32, 1).unfold(3, 32, 1)


def uint8_batches(images: torch.Tensor, **kwargs) -> TensorBatches:
    """Batches whose normalization is the identity, so pixels can be compared with the images."""
    return TensorBatches(images, torch.arange(len(images)), 16, [0.0] * 3, [1 / 255] * 3, **kwargs)


def test_crop_and_flip_keep_pixels_and_shift_them() -> None:
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    idx, none = torch.arange(64), torch.zeros(64, dtype=torch.int64)
    flips = torch.arange(64) % 2
    flipped = uint8_batches(images, augment=Augment(flip=True)).batch(idx, none, none, flips)
    assert torch.equal(flipped[::2], images[::2].float())
    assert torch.equal(flipped[1::2], images[1::2].flip(-1).float())
    dy, dx = torch.randint(0, 9, (2, 64))
    cropped = uint8_batches(images, augment=Augment(crop=True)).batch(idx, dy, dx, none)
    # a crop offset by (dy, dx) is the image shifted, zero-filled at the border
    assert torch.equal(cropped, crops_of(images)[idx, :, dy, dx])


def test_batches_are_the_bits_of_normalizing_the_padded_split_first() -> None:
    """uint8 until gathered, normalized per batch: the same floats as the former path, which
    normalized the whole padded split once and gathered from that."""
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    mean, std = NORMALIZATIONS["cifar10"]
    batches = TensorBatches(
        images, torch.arange(50), 16, mean, std, augment=Augment(crop=True, flip=True)
    )
    idx, (dy, dx), flips = torch.randperm(50), torch.randint(0, 9, (2, 50)), torch.arange(50) % 2
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    before = torch.addcmul(batches.shift, padded.float(), batches.scale)  # the former code
    expected = before.unfold(2, 32, 1).unfold(3, 32, 1)[idx, :, dy, dx]
    expected = torch.where(flips.bool()[:, None, None, None], expected.flip(-1), expected)
    assert torch.equal(batches.batch(idx, dy, dx, flips), expected)


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("flip_mode", ["random", "alternate"])
def test_batch_gather_path_gives_the_split_paths_batches(pad_mode: str, flip_mode: str) -> None:
    """The per-batch path (selected on MPS) is tested here by selecting it on the CPU."""
    images = torch.randint(0, 256, (70, 3, 32, 32), dtype=torch.uint8)
    augment = Augment(crop=True, flip=True, padding=3, pad_mode=pad_mode, flip_mode=flip_mode)
    paths = {
        gather: TensorBatches(
            images,
            torch.arange(70),
            16,
            (0.5,) * 3,
            (0.2,) * 3,
            shuffle=True,
            augment=augment,
            seed=5,
            gather=gather,
            channels_last=True,
        )
        for gather in ("split", "batch")
    }
    assert paths["split"].gather == "split" and paths["batch"].gather == "batch"
    split, batch = (list(b) for b in paths.values())
    assert len(split) == len(batch) == 5
    for (xs, ys), (xb, yb) in zip(split, batch, strict=True):
        assert torch.equal(xs, xb) and torch.equal(ys, yb)
        assert xb.is_contiguous(memory_format=torch.channels_last)
    assert paths["batch"]._windows is None  # the batch path never pads the split


def test_zero_padding_is_what_black_pixels_normalize_to() -> None:
    images = torch.full((40, 3, 32, 32), 255, dtype=torch.uint8)
    mean, std = NORMALIZATIONS["cifar10"]
    batches = TensorBatches(
        images, torch.arange(40), 40, mean, std, shuffle=True, augment=Augment(crop=True)
    )
    x, _ = next(iter(batches))
    white, black = (batches.normalize(torch.full((1, 3, 1, 1), v)) for v in (255, 0))
    is_white, is_black = (x == white).all(1), (x == black).all(1)
    assert (is_white | is_black).all() and is_black.any() and is_white.any()
    # with padding 4, a crop shows 0 to 4 black rows and columns
    assert is_black.flatten(1).sum(1).max() <= 32 * 32 - 28 * 28


def test_reflect_padding_mirrors_the_border() -> None:
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    for pad in (1, 4, 31):
        assert torch.equal(
            pad_images(images, pad, "reflect").float(),
            torch.nn.functional.pad(images.float(), (pad,) * 4, mode="reflect"),
        )
    idx = torch.arange(20)
    dy, dx = torch.randint(0, 9, (2, 20))
    batches = uint8_batches(images, augment=Augment(crop=True, pad_mode="reflect"))
    reflected = crops_of(images, 4, "reflect")[idx, :, dy, dx]
    assert torch.equal(batches.batch(idx, dy, dx, torch.zeros(20)), reflected)


def flips_per_image(images: torch.Tensor, batches: TensorBatches) -> torch.Tensor:
    """1 where an image came out mirrored, by image index (labels are the indices)."""
    seen = torch.full((len(images),), -1)
    for x, idx in batches:
        mirrored = (x == images[idx].flip(-1).float()).flatten(1).all(1)
        seen[idx] = mirrored.long()
    return seen


def test_alternate_flips_mirror_each_image_the_other_way_every_epoch() -> None:
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    epoch = [0]
    batches = uint8_batches(
        images,
        shuffle=True,
        augment=Augment(flip=True, flip_mode="alternate"),
        epoch=lambda: epoch[0],
    )
    flips = []
    for e in range(3):
        epoch[0] = e
        flips.append(flips_per_image(images, batches))
    assert (flips[0] >= 0).all() and 16 < int(flips[0].sum()) < 48  # random in epoch 0
    assert torch.equal(flips[1], 1 - flips[0]) and torch.equal(flips[2], flips[0])
    other_seed = uint8_batches(
        images, shuffle=True, augment=Augment(flip=True, flip_mode="alternate"), seed=1
    )
    assert not torch.equal(flips_per_image(images, other_seed), flips[0])


def rank_batches(n: int, rank: int, world_size: int, **kwargs) -> TensorBatches:
    picture = torch.randint(0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    one_image = picture.to(torch.uint8).expand(n, -1, -1, -1)
    kwargs = {"shuffle": True, "augment": Augment(crop=True, flip=True), "seed": 3, **kwargs}
    return uint8_batches(one_image.contiguous(), rank=rank, world_size=world_size, **kwargs)


def test_ranks_share_one_order_and_draw_their_own_augmentation() -> None:
    shards = [list(rank_batches(96, r, 3)) for r in range(3)]
    indices = [torch.cat([y for _, y in shard]) for shard in shards]
    assert [len(i) for i in indices] == [32, 32, 32]
    assert len({len(rank_batches(96, r, 3)) for r in range(3)}) == 1
    assert torch.equal(torch.cat(indices).sort().values, torch.arange(96))  # disjoint, covering
    # all images are the same picture, so different batches mean different crops or flips
    assert not torch.equal(shards[0][0][0], shards[1][0][0])
    again = list(rank_batches(96, 1, 3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, shards[1], strict=True))
    next_epoch = list(rank_batches(96, 1, 3, epoch=lambda: 1))
    assert not torch.equal(next_epoch[0][0], shards[1][0][0])


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


def test_compiled_model_is_not_recompiled_over_two_epochs(folder_root: Path) -> None:
    """``model.compile`` with a backend that counts compilations: a last partial batch makes
    Dynamo compile again, for a dynamic batch size."""
    import lightning as L

    from cifarlab.module import ClassifierModule

    compilations = []

    def counting_backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        compilations.append(example_inputs[0].shape if example_inputs else None)
        return graph.forward

    class CountedCompile(ClassifierModule):
        def configure_model(self) -> None:
            if self.net._compiled_call_impl is None:
                self.net.compile(backend=counting_backend)

    torch._dynamo.reset()
    dm = datamodule(folder_root, batch_size=20, augment=True)  # 96 = 4 x 20 + 16
    module = CountedCompile(
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
    assert trainer.global_step == 8
    assert len(compilations) == 1, compilations


def test_augment_options(folder_root: Path) -> None:
    assert datamodule(folder_root, augment=True).augment == "crop_flip"
    assert datamodule(folder_root, augment=False).augment == "none"
    with pytest.raises(CifarlabError, match="data.augment"):
        CIFAR10DataModule(source="folder", root=str(folder_root), augment="rotate")


def test_augmented_run_end_to_end(folder_root: Path, tmp_path: Path) -> None:
    from cifarlab.run import train

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


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ({"crop_padding": -1}, "data.crop_padding=-1"),
        ({"crop_padding": 32, "pad_mode": "reflect"}, "below 32"),
        ({"pad_mode": "edge"}, "data.pad_mode='edge'"),
        ({"flip_mode": "always"}, "data.flip_mode='always'"),
        ({"gather": "gpu"}, "data.gather='gpu'"),
        ({"drop_last": "yes"}, "data.drop_last='yes'"),
    ],
)
def test_bad_augmentation_options_are_refused(folder_root: Path, option: dict, needle: str) -> None:
    with pytest.raises(CifarlabError, match=re.escape(needle)):
        CIFAR10DataModule(source="folder", root=str(folder_root), **option)


def test_read_only_data_folder_gets_its_cache_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Tests run as root, whom chmod does not stop, so a read-only folder is simulated where
    cifarlab asks (``os.access``, through ``data._writable``)."""
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    writable = data._writable
    monkeypatch.setattr(data, "_writable", lambda f: root not in f.parents and writable(f))
    with caplog.at_level("WARNING", logger="cifarlab"):
        first = load_split("folder", root, "test")
    assert not (root / ".cifarlab-cache").exists()
    [cached] = (tmp_path / "home" / "cifarlab").glob("*/cifarlab-test-v*.pt")
    assert "read-only" in caplog.text and str(cached.parent) in caplog.text
    with monkeypatch.context() as patch:
        patch.setattr(data, "_read_folder", lambda *a: pytest.fail("decoded again"))
        assert torch.equal(load_split("folder", root, "test").images, first.images)

    dm = datamodule(root, val_size=2, cache_dir=str(tmp_path / "chosen"))
    assert len(list((tmp_path / "chosen").glob("*/cifarlab-train-v*.pt"))) == 1
    assert torch.equal(dm.splits["test"].images, first.images[class_mixed_order(first.labels)])
    monkeypatch.setattr(data, "_writable", lambda f: False)
    with pytest.raises(CifarlabError, match=r"data.cache_dir=.*not writable"):
        load_split("folder", root, "test", cache_dir=tmp_path / "locked")


def test_a_read_only_data_folder_with_a_built_cache_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    first = load_split("folder", root, "test")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data, "_writable", lambda f: False)
    monkeypatch.setattr(data, "_read_folder", lambda *a: pytest.fail("decoded again"))
    assert torch.equal(load_split("folder", root, "test").images, first.images)


def test_cache_is_reused_and_rebuilt_when_files_change(tmp_path: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "d", n_train=5, n_test=3)
    first = load_split("folder", root, "test")
    assert cache_path("folder", root, "test").is_file()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(data, "_read_folder", no_decoding)
    assert torch.equal(load_split("folder", root, "test").images, first.images)
    monkeypatch.undo()

    extra = root / "test" / "cat" / "0099.png"
    extra.write_bytes((root / "test" / "bird" / "0000.png").read_bytes())
    grown = load_split("folder", root, "test")
    assert len(grown.labels) == len(first.labels) + 1


def test_truncated_cache_is_rebuilt(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n_train=5, n_test=3)
    good = load_split("folder", root, "test")
    path = cache_path("folder", root, "test")
    path.write_bytes(path.read_bytes()[:100])
    again = load_split("folder", root, "test")
    assert torch.equal(again.images, good.images)
    assert torch.load(path, weights_only=True)["images"].shape == good.images.shape


def test_missing_cifar10_without_network_says_where_and_what_to_do(
    tmp_path: Path, monkeypatch
) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    dm = CIFAR10DataModule(source="cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(CifarlabError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "data.source=folder" in message and "no network" in message


def test_folder_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CifarlabError, match="does not exist"):
        _ = CIFAR10DataModule(source="folder", root=str(tmp_path)).class_names
    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    os.rename(root / "test" / "cat", root / "test" / "kitten")
    with pytest.raises(CifarlabError, match=r"test/cat is missing"):
        load_split("folder", root, "test")


def test_non_rgb_image_is_named(tmp_path: Path) -> None:
    from PIL import Image

    root = make_folder(tmp_path / "d", n_train=3, n_test=2)
    bad = root / "train" / "bird" / "0001.png"
    Image.new("L", (32, 32)).save(bad)
    with pytest.raises(CifarlabError, match="0001.png"):
        load_split("folder", root, "train")


def test_bad_settings_are_refused(folder_root: Path) -> None:
    with pytest.raises(CifarlabError, match="data.source"):
        CIFAR10DataModule(source="imagenet")
    with pytest.raises(CifarlabError, match="data.batch_size"):
        CIFAR10DataModule(source="folder", root=str(folder_root), batch_size=0)
    with pytest.raises(CifarlabError, match="data.normalize"):
        CIFAR10DataModule(source="folder", root=str(folder_root), normalize="imagenet")
    dm = CIFAR10DataModule(source="folder", root=str(folder_root), val_size=120)
    with pytest.raises(CifarlabError, match="val_size=120"):
        dm.setup()


def test_make_cifar10_helper_matches_torchvision_reader(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path)
    split = load_split("cifar10", root, "train")
    assert split.images.shape == (100, 3, 32, 32)
