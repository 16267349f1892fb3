"""The search space of ``hydra.sweeper.params`` as Optuna distributions, and a trial's values as
the overrides of its jobs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import Trial

from cifarlab.errors import CifarlabError

DISTRIBUTIONS: dict[str, type[BaseDistribution]] = {
    "float": FloatDistribution,
    "int": IntDistribution,
    "categorical": CategoricalDistribution,
}
SPACE_EXAMPLE = (
    "e.g. optimizer.lr: {type: float, low: 1.0e-4, high: 0.3, log: true}, "
    "model.width: {type: int, low: 8, high: 64, step: 8} or "
    "model.width: {type: categorical, choices: [8, 16, 32]}"
)


def search_space(params: Mapping[str, Any] | None) -> dict[str, BaseDistribution]:
    """``hydra.sweeper.params`` as Optuna distributions, checked before any trial starts."""
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=True)  # type: ignore[assignment]
    if not params:
        raise CifarlabError(
            "hydra.sweeper.params is empty: a search needs at least one parameter "
            f"({SPACE_EXAMPLE})."
        )
    return {str(key): distribution(str(key), spec) for key, spec in params.items()}


def distribution(key: str, spec: Any) -> BaseDistribution:
    """One entry of the search space: ``{type: float|int|categorical, ...}`` whose other keys are
    those of Optuna's FloatDistribution (low, high, log, step), IntDistribution (the same) or
    CategoricalDistribution (choices)."""
    if not isinstance(spec, Mapping) or spec.get("type") not in DISTRIBUTIONS:
        raise CifarlabError(
            f"hydra.sweeper.params.{key}={spec!r} must be a mapping whose type is float, int or "
            f"categorical ({SPACE_EXAMPLE})."
        )
    args = {k: v for k, v in spec.items() if k != "type"}
    if "choices" in args:
        args["choices"] = tuple(args["choices"] or ())
    try:
        return DISTRIBUTIONS[spec["type"]](**args)
    except (TypeError, ValueError) as err:
        raise CifarlabError(
            f"hydra.sweeper.params.{key}={dict(spec)} is not a valid {spec['type']} range: {err} "
            f"({SPACE_EXAMPLE})."
        ) from None


def suggest(trial: Trial, name: str, space: BaseDistribution) -> Any:
    """The trial's value for one parameter, through Optuna's public suggest API."""
    if isinstance(space, FloatDistribution):
        return trial.suggest_float(name, space.low, space.high, step=space.step, log=space.log)
    if isinstance(space, IntDistribution):
        return trial.suggest_int(name, space.low, space.high, step=space.step, log=space.log)
    assert isinstance(space, CategoricalDistribution)
    return trial.suggest_categorical(name, space.choices)


def override(key: str, value: Any) -> str:
    """``key=value`` that Hydra's command line reads back as exactly ``value`` (quoted when a
    plain form would read as something else, e.g. the string "32" or "null")."""
    if value is None or isinstance(value, bool):
        return f"{key}={str(value).lower() if value is not None else 'null'}"
    plain = f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
    try:
        if OverridesParser.create().parse_override(plain).value() == value:
            return plain
    except Exception:  # any parse error: the quoted form below
        pass
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{escaped}'"
