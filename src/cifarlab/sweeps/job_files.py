"""What a job of a sweep or search leaves in its folder, read back: the overrides it was started
with (Hydra's ``.hydra/overrides.yaml``), ``metrics.json`` (the run's) and ``job.json`` (the sweep
callback's record of the job). A file that is missing or damaged reads as empty.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

METRICS_FILE = "metrics.json"
JOB_RECORD = "job.json"


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; empty when the file is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def job_overrides(job_dir: Path) -> list[str]:
    """The overrides a job was started with, as given (``key=value``)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def override_values(job_dir: Path) -> dict[str, str]:
    """A job's overrides as key -> value text."""
    lines = job_overrides(job_dir)
    parsed = OverridesParser.create().parse_overrides(lines)
    return {
        o.get_key_element(): line.split("=", 1)[1] for o, line in zip(parsed, lines, strict=True)
    }
