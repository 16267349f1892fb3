"""Every user-facing key of conf/, declared once: its type, allowed values or range, one-line doc.

conf/ holds the values Hydra composes; this package says what they may be, and pydantic checks a
composed config against it (``validate``) before anything heavy is imported, so a bad value is
answered in a second, in one paragraph. ``train.py --help`` and docs/configuration.md list the
keys from it, and the setup keys (``SETUP_KEYS``: where and on what a run happens, not how it
learns) are marked in it: Hydra leaves them out of a job's name (``${setup_keys:}`` in
conf/hydra/default.yaml, a resolver of the ``cifarlab`` package) and a resumed run may change
them.
"""

from __future__ import annotations

from cifarlab.config.check import validate
from cifarlab.config.entries import ENTRIES, EvalConfig, ExportConfig, PredictConfig, TrainConfig
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
