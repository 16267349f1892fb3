"""TensorBoard's HParams tab: the columns a run shows there and the summaries that write them.

``cifarlab.callbacks.hparams.HParamsLogger`` writes these summaries once per run. The metric values
are the run's own logged scalars (``val/acc_best``, ``test/acc``), so no placeholder value is
written. Every column has one fixed type (lr always a float, classes always a string, ...), so the
columns of a sweep's runs line up; the columns a sweep varies are marked as differing, which
TensorBoard shows first and by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tensorboard is imported when a run writes to it, not with cifarlab
    from tensorboard.compat.proto.summary_pb2 import Summary

# the final metrics every run reports in the HParams tab (values come from the logged scalars)
HPARAMS_METRICS = ("val/acc_best", "test/acc", "val/acc", "test/loss")
# each HParams column and the config keys (overrides) that set it
HPARAMS_KEYS = {
    "model": ("model", "model.name"),
    "width": ("model.width",),
    "optimizer": ("optimizer", "optimizer.name"),
    "lr": ("optimizer.lr",),
    "weight_decay": ("optimizer.weight_decay",),
    "scheduler": ("scheduler", "scheduler.name"),
    "batch_size": ("data.batch_size",),
    "max_epochs": ("trainer.max_epochs",),
    "augment": ("data.augment",),
    "seed": ("seed",),
    "classes": ("data.classes",),
}


def hparams_summaries(
    hparams: dict[str, Any], max_epochs: int | None, swept: set[str]
) -> tuple[Summary, Summary, Summary]:
    """The experiment, session-start and session-end summaries of a run; ``swept`` are the config
    keys a multirun varies (empty for a single run)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    searched = swept_columns(hparams, swept)
    params = {**run_hparams(hparams, max_epochs), **searched}
    experiment, start, end = hparams_summary(params, dict.fromkeys(HPARAMS_METRICS, 0.0))
    fixed = {c for c, keys in HPARAMS_KEYS.items() if swept & set(keys)}
    mark_differing(experiment, fixed | set(searched))
    return experiment, start, end


def swept_columns(hparams: dict[str, Any], swept: set[str]) -> dict[str, Any]:
    """A column for each swept key that no fixed column shows (e.g. ``loss.label_smoothing`` in
    a search), named by the key: a number as a float, anything else as a string. Keys outside
    the run's hyperparameters (``hparams``: model, optimizer, scheduler, data, loss, ...) have
    no value to show and get no column."""
    shown = {key for keys in HPARAMS_KEYS.values() for key in keys}
    columns: dict[str, Any] = {}
    for key in sorted(swept - shown):
        node: Any = hparams
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or isinstance(node, (dict, list)):
            continue
        number = isinstance(node, (int, float)) and not isinstance(node, bool)
        columns[key] = float(node) if number else str(node)
    return columns


def mark_differing(experiment: Summary, columns: set[str]) -> None:
    """Sets ``differs`` on the experiment's hparam columns named in ``columns``."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    value = experiment.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in columns
    value.metadata.plugin_data.content = data.SerializeToString()


def run_hparams(hparams: dict[str, Any], max_epochs: int | None) -> dict[str, Any]:
    """The columns of the HParams table, each cast to its one type."""
    model, optimizer = hparams["model"], hparams["optimizer"]
    scheduler = hparams.get("scheduler") or {}
    data = hparams.get("data") or {}
    classes = data.get("classes")
    return {
        "model": str(model["name"]),
        "width": int(model["width"]),
        "optimizer": str(optimizer["name"]),
        "lr": float(optimizer["lr"]),
        "weight_decay": float(optimizer.get("weight_decay", 0.0)),
        "scheduler": str(scheduler.get("name", "none")),
        "batch_size": int(data.get("batch_size", 0)),
        "max_epochs": int(max_epochs if max_epochs is not None else -1),
        "augment": str(data.get("augment", "none")),
        "seed": int(data.get("seed", 0)),
        "classes": ",".join(classes) if classes else f"all {len(hparams['class_names'])}",
    }
