"""A composed config checked against the declaration, every bad key named in one paragraph.

pydantic reports each failure with where it is (``loc``), what kind it is and the value given;
the paragraph names the key as it is written on the command line and says what it takes, in the
words of the declaration (``cifarlab.config.schema.allowed``) and with its doc.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from cifarlab.config.entries import Entry
from cifarlab.config.schema import allowed, fields_by_key, sections_in, show, tag
from cifarlab.errors import CifarlabError


def plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as plain values, resolved; where an interpolation can only be resolved while
    Hydra runs a job (``${hydra:runtime.output_dir}`` in a test's composed config), as written."""
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        values = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(values, dict)
    return {str(k): v for k, v in values.items()}


def validate(cfg: DictConfig | Mapping[str, Any], entry: type[Entry]) -> None:
    """Raises CifarlabError, one paragraph naming every bad key, when ``cfg`` does not fit."""
    values = plain(cfg)
    try:
        entry.model_validate(values)
    except ValidationError as err:
        raise CifarlabError(describe(err, entry, values)) from None


def describe(error: ValidationError, entry: type[Entry], values: dict[str, Any]) -> str:
    """The paragraph: a sentence per bad key (a union's members fail alike: said once)."""
    sentences: dict[str, str] = {}
    for detail in error.errors():
        where, sentence = _sentence(detail, entry, values)
        sentences.setdefault(where, sentence)
    return (
        " ".join(sentences.values())
        + f" `{entry.script} --help` lists every key with what it takes."
    )


def _located(entry: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[list[str], Any, Any]:
    """The keys of ``loc`` as the config names them, the last declared field on the way and the
    section that holds it. A union's option (``bn_cnn``) and member (``int``) are no keys."""
    keys: list[str] = []
    field: FieldInfo | None = None
    section: type[BaseModel] = entry
    candidates: list[type[BaseModel]] = [entry]
    for part in loc:
        if isinstance(part, int):  # an item of a list: its key is the list's
            continue
        holder = next((s for s in candidates if part in fields_by_key(s)), None)
        if holder is not None:
            section, field = holder, fields_by_key(holder)[part]
            keys.append(part)
            candidates = sections_in(field.annotation)
            continue
        chosen = [s for s in candidates if tag(s) == part]
        if not chosen:
            break
        section, candidates = chosen[0], chosen
    return keys, field, section


def _given(values: dict[str, Any], keys: list[str]) -> str:
    """The value of ``keys`` as given: the whole list where one of its items is wrong."""
    value: Any = values
    for name in keys:
        value = value.get(name) if isinstance(value, dict) else None
    return repr(value) if isinstance(value, str) else show(value)


def _sentence(detail: ErrorDetails, entry: type[Entry], values: dict[str, Any]) -> tuple[str, str]:
    """Where the failure is (to say each once) and the sentence that says it."""
    keys, field, section = _located(entry, detail["loc"])
    name, kind, ctx = ".".join(keys), detail["type"], detail.get("ctx", {})
    group = f"{name}=NAME picks conf/{name}/NAME.yaml"
    if kind == "union_tag_invalid":
        tags = str(ctx["expected_tags"]).replace("'", "")
        return name, f"{name}.name={ctx['tag']!r} is not known; choose one of {tags} ({group})."
    if kind == "union_tag_not_found":
        return name, f"{name}.name is missing; {group}."
    if kind == "extra_forbidden":
        extra = f"{name}.{detail['loc'][-1]}".lstrip(".")
        option = f"{name}={tag(section)}" if tag(section) else name or entry.script
        known = ", ".join(k for k in fields_by_key(section) if k != "_target_")
        return extra, f"{extra} is not a key of {option}, whose keys are {known}."
    if kind == "value_error":
        reason = str(ctx["error"])
        if field is None or sections_in(field.annotation):  # about several keys of a section
            return f"{name}:{reason}", reason
        return name, f"{name}={_given(values, keys)} {reason}."
    assert field is not None
    takes = allowed(field.annotation, field.metadata)
    if kind == "missing":
        return name, f"{name} is missing: it takes {takes}; {field.description}."
    return name, f"{name}={_given(values, keys)} must be {takes}: {field.description}."
