"""The declaration as text: ``train.py --help``'s list of keys and docs/configuration.md's tables.

Both walk a composed config along the declaration, so a group shows the keys of the option the
config picked (``model=resnet`` shows ``model.depth``), each with its value there, what it takes
and its doc.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import OmegaConf
from pydantic import BaseModel

from cifarlab.config.entries import ENTRIES, TrainConfig
from cifarlab.config.schema import allowed, fields_by_key, option, sections_in, show, tag

TABLE_START, TABLE_END = "<!-- keys:start -->", "<!-- keys:end -->"
# the groups whose options declare keys of their own: the docs list each option's
OPTION_GROUPS = ("model", "optimizer", "scheduler")
# compose every optional node of train.py once: all loggers, and hparams_search's keys
EVERY_NODE = ("logger=[tensorboard,csv,mlflow,wandb]", "hparams_search=optuna_lr_width")
# the keys every script shares with train.py, listed once, in train.py's table
SHARED = ("task_name", "paths", "trainer", "hardware")


class Row(NamedTuple):
    key: str
    value: Any
    takes: str
    doc: str


def rows(
    section: type[BaseModel], values: dict[str, Any], prefix: str = "", options: str = ""
) -> list[Row]:
    """A row per declared key of ``values``: nodes are walked into along the option they pick,
    whose ``name`` takes any of the group's ``options``; a node set to null is one row. Hydra's
    ``_target_`` is left out."""
    found: list[Row] = []
    for name, field in fields_by_key(section).items():
        if name == "_target_" or name not in values:
            continue
        value, dotted = values[name], f"{prefix}{name}"
        chosen = option(field.annotation, value.get("name")) if isinstance(value, dict) else None
        if chosen is not None:
            tags = [str(tag(s)) for s in sections_in(field.annotation) if tag(s)]
            named = f"one of {', '.join(tags)}" if len(tags) > 1 else ""
            found.extend(rows(chosen, value, f"{dotted}.", named))
        else:
            takes = (
                options if name == "name" and options else allowed(field.annotation, field.metadata)
            )
            found.append(Row(dotted, value, takes, field.description or ""))
    return found


def options_of(group: str) -> list[str]:
    """The options of one of ``OPTION_GROUPS``, by their ``name``, as the declaration has them."""
    members = sections_in(TrainConfig.model_fields[group].annotation)
    return [str(tag(member)) for member in members]


def help_text(config_name: str, values: dict[str, Any]) -> str:
    """``--help``'s list: a line per key of the composed config (``values``, hydra removed)."""
    lines = []
    listed = rows(ENTRIES[config_name], values)
    width = max(len(row.key) for row in listed)
    for row in listed:
        lines.append(f"  {row.key:<{width}}  = {show(row.value):<12}  {row.takes}: {row.doc}")
    return "\n".join(lines)


def _cell(text: Any) -> str:
    """Text in a table cell: a ``|`` would end the cell, ``<key>`` read as an HTML tag."""
    return str(text).replace("|", "\\|").replace("<", "&lt;")


def _table(listed: list[Row]) -> list[str]:
    lines = ["| key | default | takes | what it does |", "|---|---|---|---|"]
    for row in listed:
        value = f"`{show(row.value)}`"
        lines.append(f"| `{row.key}` | {_cell(value)} | {_cell(row.takes)} | {_cell(row.doc)} |")
    return [*lines, ""]


def _composer(conf_dir: Path) -> Any:
    """A config of ``conf_dir`` with overrides, as plain values (its interpolations as written,
    so that the docs show ``${paths.data_dir}``, not a path)."""
    from hydra import compose, initialize_config_dir

    def composed(name: str, overrides: list[str]) -> dict[str, Any]:
        with initialize_config_dir(str(conf_dir.resolve()), version_base="1.3"):
            return OmegaConf.to_container(compose(name, overrides))  # type: ignore[return-value]

    return composed


def markdown(conf_dir: Path) -> str:
    """docs/configuration.md's tables of ``conf_dir``'s keys: train.py's first, then a table per
    option of each option group (conf/<group>/<option>.yaml over the default option's keys that
    it shares, as train.yaml has them), then the keys the other scripts have alone."""
    compose = _composer(conf_dir)
    train = compose("train", list(EVERY_NODE))
    shared = [k for k in TrainConfig.model_fields if k not in OPTION_GROUPS]
    lines = ["### train.py", "", *_table(rows(TrainConfig, {k: train[k] for k in shared}))]
    for group in OPTION_GROUPS:
        for name in options_of(group):
            own = OmegaConf.to_container(OmegaConf.load(conf_dir / group / f"{name}.yaml"))
            known = fields_by_key(option(TrainConfig.model_fields[group].annotation, name))
            values = {**{k: v for k, v in train[group].items() if k in known}, **own}
            lines += [f"#### {group}={name}", "", *_table(rows(TrainConfig, {group: values}))]
    for script, entry in ENTRIES.items():
        if script != "train":
            own = {k: v for k, v in compose(script, []).items() if k not in SHARED}
            lines += [f"### {entry.script}", "", *_table(rows(entry, own))]
    lines.append(
        "eval.py's `trainer.*` and `hardware.*` are train.py's; every script has `task_name` "
        "and `paths.*`."
    )
    return "\n".join(lines)


def write_markdown(path: Path, table: str) -> None:
    """Puts ``table`` between the markers of ``path``, leaving the rest of the page as it is."""
    text = path.read_text()
    head, start, rest = text.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"{path} has no {TABLE_START} ... {TABLE_END} lines")
    path.write_text(f"{head}{TABLE_START}\n\n{table}\n\n{TABLE_END}{tail}")


def table_in(path: Path) -> str:
    """What ``write_markdown`` put between the markers of ``path``."""
    return path.read_text().partition(TABLE_START)[2].partition(TABLE_END)[0].strip("\n")
