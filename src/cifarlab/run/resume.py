"""Continuing an interrupted run: its own config from the checkpoint, and what may change on resume.

``train.py ckpt_path=<run>/checkpoints/last.ckpt`` continues the run in its own directory with the
config stored in the checkpoint (cifarlab.callbacks.checkpoint_state.ConfigInCheckpoint); an
override that would change the run is refused, one that only says where things are or on what
hardware is taken. The stored config supplies values, never code: the classes it builds
(``_target_``) must be ones this project's conf/ or the command line names (``check_targets``).
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cifarlab.config import LOCATION_KEYS, SETUP_KEYS
from cifarlab.errors import CifarlabError
from cifarlab.run.checkpoints import CONFIG_KEY, load_checkpoint
from cifarlab.run.run_folders import resume_folder

# every _target_ that conf/ gives a run's config (conf/trainer, conf/callbacks, conf/logger): the
# code a stored config may name on its own (tests/test_run_resume.py keeps this equal to conf/)
CONF_TARGETS = frozenset(
    {
        "lightning.pytorch.Trainer",
        "lightning.pytorch.callbacks.LearningRateMonitor",
        "lightning.pytorch.callbacks.ModelCheckpoint",
        "lightning.pytorch.loggers.CSVLogger",
        "cifarlab.callbacks.error_analysis.ErrorAnalysis",
        "cifarlab.callbacks.class_figures.ClassFigures",
        "cifarlab.callbacks.hparams.HParamsLogger",
        "cifarlab.callbacks.image_grids.ImageGrids",
        "cifarlab.callbacks.early_stopping.early_stopping",
        "cifarlab.run.loggers.tensorboard_logger",
        "cifarlab.callbacks.console.NetSummary",
        "cifarlab.callbacks.console.ProgressBar",
        "cifarlab.callbacks.curves.EpochCurves",
        "cifarlab.run.loggers.mlflow_logger",
        "cifarlab.run.loggers.wandb_logger",
        "cifarlab.callbacks.trial_pruning.trial_pruning",
        "cifarlab.run.step_hooks.NoProfiler",
        "cifarlab.run.step_hooks.SkipIdleHooks",
    }
)
# the _target_s that checkpoints of earlier cifarlab versions store, whose modules lay side by side
# in src/cifarlab/, by the name each has in this version
EARLIER_TARGETS = {
    "cifarlab.analysis.ErrorAnalysis": "cifarlab.callbacks.error_analysis.ErrorAnalysis",
    "cifarlab.callbacks.ClassFigures": "cifarlab.callbacks.class_figures.ClassFigures",
    "cifarlab.callbacks.HParamsLogger": "cifarlab.callbacks.hparams.HParamsLogger",
    "cifarlab.callbacks.ImageGrids": "cifarlab.callbacks.image_grids.ImageGrids",
    "cifarlab.callbacks.early_stopping": "cifarlab.callbacks.early_stopping.early_stopping",
    "cifarlab.callbacks.tensorboard_logger": "cifarlab.run.loggers.tensorboard_logger",
    "cifarlab.console.NetSummary": "cifarlab.callbacks.console.NetSummary",
    "cifarlab.console.ProgressBar": "cifarlab.callbacks.console.ProgressBar",
    "cifarlab.curves.EpochCurves": "cifarlab.callbacks.curves.EpochCurves",
    "cifarlab.loggers.mlflow_logger": "cifarlab.run.loggers.mlflow_logger",
    "cifarlab.loggers.wandb_logger": "cifarlab.run.loggers.wandb_logger",
    "cifarlab.pruning.trial_pruning": "cifarlab.callbacks.trial_pruning.trial_pruning",
    "cifarlab.step_hooks.NoProfiler": "cifarlab.run.step_hooks.NoProfiler",
    "cifarlab.step_hooks.SkipIdleHooks": "cifarlab.run.step_hooks.SkipIdleHooks",
}
# the (node, key)s that checkpoints of earlier cifarlab versions store, by the one each is now
EARLIER_KEYS = {
    ("trainer", key): ("hardware", key)
    for key in ("float32_matmul_precision", "keep_freed_host_memory")
}
# the parts of a stored config every run reads
RUN_KEYS = ("seed", "data", "model", "optimizer", "trainer", "paths")


def _is_setup(key: str) -> bool:
    """A key cifarlab.config marks as setup, or one inside such a node (callbacks.progress_bar)."""
    return any(key == k or key.startswith(f"{k}.") for k in SETUP_KEYS)


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """Every leaf of a plain config tree by its dotted key (lists are leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    leaves: dict[str, Any] = {}
    for key, child in value.items():
        leaves.update(_leaves(child, f"{prefix}.{key}" if prefix else str(key)))
    return leaves


def _get(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _given_value(cfg: DictConfig, key: str) -> Any:
    """The composed value of ``key`` as plain data; interpolations (values derived from other
    keys, like ``${paths.output_dir}/checkpoints``) stay unresolved, so they are not compared."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return None
    return _get(OmegaConf.to_container(parent, resolve=False), leaf)


def _current_targets(tree: Any) -> Any:
    """``tree`` with every ``_target_`` of ``EARLIER_TARGETS`` under the name it has now."""
    if isinstance(tree, dict):
        return {
            k: EARLIER_TARGETS.get(v, v)
            if k == "_target_" and isinstance(v, str)
            else _current_targets(v)
            for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [_current_targets(v) for v in tree]
    return tree


def _current_keys(stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with every key of ``EARLIER_KEYS`` it holds moved to the key it has now."""
    moved = {name: dict(node) if isinstance(node, dict) else node for name, node in stored.items()}
    for (old_node, old_key), (new_node, new_key) in EARLIER_KEYS.items():
        if isinstance(moved.get(old_node), dict) and old_key in moved[old_node]:
            moved.setdefault(new_node, {})[new_key] = moved[old_node].pop(old_key)
    return moved


def _relocate(tree: Any, old: str, new: str) -> Any:
    """Rewrites every path in ``tree`` under ``old`` to lie under ``new`` (a moved run folder)."""
    if isinstance(tree, dict):
        return {k: _relocate(v, old, new) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_relocate(v, old, new) for v in tree]
    if isinstance(tree, str) and (tree == old or tree.startswith(old.rstrip("/") + "/")):
        return new + tree[len(old) :]
    return tree


def _setup_changes(
    cfg: DictConfig, stored: dict[str, Any], given: list[str] | None, path: str
) -> dict[str, Any]:
    """The values the command line changes against the ``stored`` run config, by dotted key;
    refuses an override that changes anything but a setup key (``SETUP_KEYS``)."""
    refused, setup = [], {}
    for override in OverridesParser.create().parse_overrides(list(given or [])):
        key = override.get_key_element().lstrip("+~").replace("/", ".")
        if key == "ckpt_path" or key == "hydra" or key.startswith("hydra."):
            continue
        old = _leaves(_get(stored, key), key)
        new = _leaves(_given_value(cfg, key), key)
        changed = {
            k: new.get(k)
            for k in old.keys() | new.keys()
            if old.get(k) != new.get(k) and not (isinstance(new.get(k), str) and "${" in new[k])
        }
        if any(not _is_setup(k) for k in changed):
            refused.append(override.input_line)
        setup.update(changed)
    if refused:
        raise CifarlabError(
            f"ckpt_path={path} continues its run exactly as it was configured, so "
            f"{' '.join(refused)} cannot apply (only {', '.join(SETUP_KEYS)} may change on "
            f"resume). Drop {'them' if len(refused) > 1 else 'it'}, or start a new run."
        )
    return setup


def resume_config(cfg: DictConfig, given: list[str] | None = None) -> DictConfig:
    """The config that continues the run a checkpoint came from, or ``cfg`` for a fresh run.

    ``given`` are the command-line overrides (Hydra's). A resumed run keeps its own settings:
    changing the model, data or schedule halfway would not continue that run, so an override that
    changes one is refused. An override equal to the run's own value is accepted (the same command
    plus ``ckpt_path`` resumes), and the setup keys (``SETUP_KEYS``: where the data and outputs
    are, which hardware, what is shown) may change, so a run can move to another machine; paths
    under a moved folder (``LOCATION_KEYS``: checkpoints, logs) move with it. Without
    ``paths.output_dir`` the run goes on in the folder its checkpoint lies in
    (cifarlab.run.run_folders.resume_folder).
    """
    path = cfg.get("ckpt_path")
    if not path:
        return cfg
    ckpt = load_checkpoint(path, purpose="Resuming")
    stored = ckpt.get(CONFIG_KEY)
    if not isinstance(stored, dict):
        raise CifarlabError(
            f"ckpt_path={path} holds no run config, so it cannot be resumed; only checkpoints "
            "written by train.py can. Evaluate it with eval.py instead."
        )
    stored = _current_keys(_current_targets(stored))
    setup = _setup_changes(cfg, stored, given, path)
    if "paths.output_dir" not in setup:  # the command does not say where: the checkpoint does
        folder = resume_folder(path, stored, lambda: str(cfg.paths.output_dir))
        if folder is not None:
            setup["paths.output_dir"] = folder
    for key, value in sorted(setup.items()):
        old_value = _get(stored, key)
        if key in LOCATION_KEYS and isinstance(old_value, str):
            stored = _relocate(stored, old_value, str(value))
    try:
        resumed = OmegaConf.create(stored)
        for key, value in setup.items():
            OmegaConf.update(resumed, key, value, force_add=True)
        resumed.ckpt_path = str(path)
        for node in (resumed.get("logger") or {}).values():
            if node and "tensorboard" in str(node.get("_target_", "")).lower():
                # events past the checkpoint (logged before the interrupt) are hidden, not
                # doubled; matches Lightning's class and cifarlab.run.loggers.tensorboard_logger
                node.purge_step = int(ckpt.get("global_step", 0))
        # plain values: what is checked below is exactly what gets built. train.py stores
        # resolved values, so an interpolation in a stored config (which could decode into a
        # new _target_ when resolved later) means some other program made the file
        plain = OmegaConf.to_container(resumed, resolve=True)
    except (OmegaConfBaseException, AttributeError) as err:
        raise CifarlabError(
            f"ckpt_path={path} cannot be resumed: its stored config is not one train.py writes "
            f"({type(err).__name__}: {err}); train.py stores plain resolved values only."
        ) from None
    assert isinstance(plain, dict)
    _check_run_keys(plain, path)
    check_targets(plain, cfg, path)
    return OmegaConf.create(plain)


def _check_run_keys(plain: dict[str, Any], path: str) -> None:
    missing = [key for key in RUN_KEYS if key not in plain]
    if missing:
        raise CifarlabError(
            f"ckpt_path={path} cannot be resumed: its stored config has no {', '.join(missing)}, "
            "which every run of this version of cifarlab has, so another version (or another "
            "program) wrote it. Test it with eval.py, or resume it with the version that wrote it."
        )


def _targets(tree: Any, node: str = "") -> dict[str, Any]:
    """Every ``_target_`` of a plain config tree by the node it builds (``callbacks.curves``;
    Hydra also builds the ones nested in arguments and lists, e.g. ``trainer.plugins.0``)."""
    found: dict[str, Any] = {}
    if isinstance(tree, dict):
        if "_target_" in tree:
            found[node] = tree["_target_"]
        children = [(k, v) for k, v in tree.items() if k != "_target_"]
    elif isinstance(tree, list):
        children = list(enumerate(tree))
    else:
        return found
    for key, child in children:
        found.update(_targets(child, f"{node}.{key}" if node else str(key)))
    return found


def check_targets(stored: dict[str, Any], cfg: DictConfig, path: str) -> None:
    """Refuses a stored config that would build code this project's configs do not name.

    Hydra imports and calls whatever a ``_target_`` names, so a checkpoint that loads safely
    (``weights_only``) could still run any function on resume. A target is accepted when it is
    one of conf/'s (``CONF_TARGETS``) or the composed config (conf/ and the command line) names
    it for the same node: a run started with ``+callbacks.x._target_=my.Callback`` resumes with
    that override given again.
    """
    given = _targets(OmegaConf.to_container(cfg, resolve=False))
    for node, target in _targets(stored).items():
        if target in CONF_TARGETS or given.get(node) == target:
            continue
        plus = "" if OmegaConf.select(cfg, node, default=None) is not None else "+"
        origin = (
            ", so another version of cifarlab wrote it"
            if str(target).startswith("cifarlab.")
            else ""
        )
        raise CifarlabError(
            f"ckpt_path={path} cannot be resumed: its config builds {node} from {target}, which "
            f"is none of the classes this version's conf/ names{origin}. A checkpoint supplies "
            "values, never code, so nothing was built from it. Test it with eval.py (which runs "
            "none of its config), or, if you trust this file and that code, name it on the "
            f"command line as well: {plus}{node}._target_={target}"
        )


def pin_logger_versions(config: dict[str, Any], loggers: list[Any]) -> None:
    """Writes each TensorBoard logger's folder name into the config stored in checkpoints.

    In a multirun the folder is named by the job's overrides (cifarlab.callbacks), which a resumed
    job, started as a single run, could not know; Lightning's own class would pick a new
    ``version_N``. With the name pinned, a resumed run logs into, and purges, its own folder.
    """
    nodes = [n for n in (config.get("logger") or {}).values() if n and "_target_" in n]
    for node, logger in zip(nodes, loggers, strict=False):
        if isinstance(logger, TensorBoardLogger) and node.get("version") is None:
            node["version"] = logger.version
