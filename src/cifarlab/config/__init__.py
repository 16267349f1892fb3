"""Every user-facing key of conf/, declared once: its type, allowed values or range, one-line doc.

conf/ holds the values Hydra composes; this package says what they may be, and pydantic checks a
composed config against it (``validate``) before anything heavy is imported, so a bad value is
answered in a second, in one paragraph. ``train.py --help`` and docs/configuration.md list the
keys from it, and the setup keys (``SETUP_KEYS``: where and on what a run happens, not how it
learns) are marked in it: Hydra leaves them out of a job's name (``${setup_keys:}`` in
conf/hydra/default.yaml) and a resumed run may change them.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from cifarlab.config.check import validate
from cifarlab.config.entries import ENTRIES, EvalConfig, ExportConfig, PredictConfig, TrainConfig
from cifarlab.config.listing import help_text
from cifarlab.config.schema import is_location, is_setup, leaves

__all__ = [
    "ENTRIES",
    "LOCATION_KEYS",
    "SETUP_KEYS",
    "EvalConfig",
    "ExportConfig",
    "PredictConfig",
    "TrainConfig",
    "validate",
]

SETUP_KEYS = tuple(sorted({k for e in ENTRIES.values() for k, f in leaves(e) if is_setup(f)}))
LOCATION_KEYS = tuple(sorted({k for e in ENTRIES.values() for k, f in leaves(e) if is_location(f)}))


def _setup_keys(*hydra_keys: str) -> list[str]:
    """``exclude_keys`` of conf/hydra/default.yaml: the setup keys, and the Hydra keys and group
    choices that name no hyperparameter either (given there)."""
    return [*SETUP_KEYS, *hydra_keys]


def _declared_keys(*, _root_: DictConfig) -> str:
    """``--help``'s list of keys for the script being run. ``$`` is doubled: Hydra fills its help
    template with ``string.Template``, to which a bare ``$`` (``${paths.data_dir}``) is a field."""
    values: dict[str, Any] = OmegaConf.to_container(_root_, resolve=False)  # type: ignore[assignment]
    values.pop("hydra", None)
    return help_text(str(_root_.hydra.job.config_name), values).replace("$", "$$")


for _name, _resolver in (("setup_keys", _setup_keys), ("declared_keys", _declared_keys)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)
