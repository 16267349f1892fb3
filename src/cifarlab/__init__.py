"""cifarlab: a PyTorch Lightning + Hydra framework for CIFAR-10.

Importing it makes known the resolvers that conf/hydra/default.yaml composes with (every Hydra
app on conf/ needs them, and Hydra imports this package at each start, through
src/hydra_plugins/cifarlab_search.py); what they return comes from cifarlab.config, imported
only when one is resolved.
"""

from typing import Any

from omegaconf import DictConfig, OmegaConf


def _setup_keys(*hydra_keys: str) -> list[str]:
    """``${setup_keys:...}``, Hydra's ``exclude_keys``: the keys cifarlab.config marks as setup,
    and the Hydra keys and group choices given as arguments, which name no hyperparameter either."""
    from cifarlab.config import SETUP_KEYS

    return [*SETUP_KEYS, *hydra_keys]


def _declared_keys(*, _root_: DictConfig) -> str:
    """``${declared_keys:}``, ``--help``'s list of keys for the script being run. ``$`` is doubled:
    Hydra fills its help template with ``string.Template``, to which a bare ``$`` is a field."""
    from cifarlab.config.listing import help_text

    values: dict[str, Any] = OmegaConf.to_container(_root_, resolve=False)  # type: ignore[assignment]
    values.pop("hydra", None)
    return help_text(str(_root_.hydra.job.config_name), values).replace("$", "$$")


for _name, _resolver in (("setup_keys", _setup_keys), ("declared_keys", _declared_keys)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)
