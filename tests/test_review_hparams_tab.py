"""The HParams tab's columns (cifarlab.review.hparams_tab): one type per column, swept ones
marked."""

import json

from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.tensorboard.summary import hparams as hparams_summary

from cifarlab.review.hparams_tab import HPARAMS_KEYS, hparams_summaries, mark_differing, run_hparams

HPARAMS_EXAMPLE = {
    "model": {"name": "lenet", "width": 6},
    "optimizer": {"name": "sgd", "lr": 1},
    "class_names": ["cat", "dog"],
    "data": {"batch_size": 16, "seed": 3, "classes": ["cat", "dog"], "augment": True},
}


def test_hparams_keep_one_type_per_column() -> None:
    base = json.loads(json.dumps(HPARAMS_EXAMPLE))
    columns = run_hparams(base, None)
    assert isinstance(columns["lr"], float) and columns["lr"] == 1.0
    assert columns["classes"] == "cat,dog" and columns["augment"] == "True"
    assert columns["max_epochs"] == -1 and columns["scheduler"] == "none"
    base["data"]["classes"] = None
    assert run_hparams(base, 5)["classes"] == "all 2"


def test_swept_columns_are_marked_as_differing() -> None:
    experiment, _, _ = hparams_summary({"lr": 0.1, "width": 8, "model": "x"}, {"test/acc": 0.0})
    mark_differing(experiment, {"lr", "width"})
    content = experiment.value[0].metadata.plugin_data.content
    infos = plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos
    assert {i.name: i.differs for i in infos} == {"lr": True, "width": True, "model": False}
    assert set(HPARAMS_KEYS) == set(run_hparams(HPARAMS_EXAMPLE, 1))


def plugin_data(summary) -> plugin_data_pb2.HParamsPluginData:
    return plugin_data_pb2.HParamsPluginData.FromString(
        summary.value[0].metadata.plugin_data.content
    )


def test_a_runs_summaries_mark_the_columns_its_sweep_varies() -> None:
    experiment, start, _ = hparams_summaries(HPARAMS_EXAMPLE, 3, {"optimizer.lr", "model"})
    infos = plugin_data(experiment).experiment.hparam_infos
    assert {i.name for i in infos if i.differs} == {"lr", "model"}
    assert {m.name.tag for m in plugin_data(experiment).experiment.metric_infos} == {
        "val/acc_best",
        "test/acc",
        "val/acc",
        "test/loss",
    }
    values = plugin_data(start).session_start_info.hparams
    assert values["max_epochs"].number_value == 3 and values["model"].string_value == "lenet"
    single, _, _ = hparams_summaries(HPARAMS_EXAMPLE, 3, set())
    assert not any(i.differs for i in plugin_data(single).experiment.hparam_infos)
