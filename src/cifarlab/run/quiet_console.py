"""A console that shows the run, not the libraries: no tips or deprecation noise."""

from __future__ import annotations

import logging
import warnings

# messages that come from how Lightning 2.6 and torch 2.15 talk to each other or advertise, not
# from anything a cifarlab user can change
NOISE_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's _pytree on torch 2.15
)
NOISE_LOGS = ("💡 Tip:",)  # Lightning's litlogger / litmodels advertisements


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(noise in str(record.msg) for noise in NOISE_LOGS)


def quiet_console() -> None:
    """Silences the library messages above; everything else (our own warnings) stays."""
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # Lightning's rank_zero_info logs through these two loggers (a filter sees only records
    # created on its own logger, not those propagated from below)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
