"""The pieces every declared key is made of, and the words that describe what a key takes.

A section is a pydantic model with strict types (``true`` is no number, ``"yes"`` no boolean) that
refuses keys it does not declare; ``key`` declares one key with its one-line doc, its range
(``gt``, ``ge``, ``lt``, ``le``) and whether it is setup rather than a hyperparameter. The values
themselves stay in conf/, which Hydra composes; the declaration says what they may be.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo


class Section(BaseModel):
    """A node of the config whose every key is declared: strict types, no other keys."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Built(Section):
    """A node Hydra builds (``_target_``); a Lightning class takes more arguments than those
    declared (``extra="allow"`` in the subclass), a cifarlab one only these."""

    target: str = Field(alias="_target_", description="the class or function Hydra builds")


def key(doc: str, *, setup: bool = False, location: bool = False, **rules: Any) -> Any:
    """One declared key: its doc and range. ``setup`` marks a key that says where or on what
    the run happens, not how it learns (left out of a job's name, free to change on resume);
    ``location`` marks a setup key that is a path, under which other paths move with it."""
    marks = {"setup": True, "location": location} if setup or location else None
    return Field(description=doc, json_schema_extra=marks, **rules)


def is_setup(field: FieldInfo) -> bool:
    return isinstance(field.json_schema_extra, dict) and bool(field.json_schema_extra["setup"])


def is_location(field: FieldInfo) -> bool:
    return isinstance(field.json_schema_extra, dict) and bool(field.json_schema_extra["location"])


def fields_by_key(section: type[BaseModel]) -> dict[str, FieldInfo]:
    """A section's fields by the key they have in the config (``_target_``, not ``target``)."""
    return {field.alias or name: field for name, field in section.model_fields.items()}


def sections_in(annotation: Any) -> list[type[BaseModel]]:
    """The sections a key may hold: itself, a union's members, one under ``| None``."""
    if get_origin(annotation) is Annotated:
        return sections_in(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [s for member in get_args(annotation) for s in sections_in(member)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, Section) else []


def tag(section: type[BaseModel]) -> str | None:
    """The ``name`` that selects this option of a group (``model=lenet``), if it is one."""
    field = section.model_fields.get("name")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    (value,) = get_args(field.annotation)
    return str(value)


def option(annotation: Any, name: Any) -> type[BaseModel] | None:
    """The section a group's ``name`` selects, or the one section a key holds."""
    sections = sections_in(annotation)
    if len(sections) == 1 and tag(sections[0]) is None:
        return sections[0]
    return next((s for s in sections if tag(s) == name), None)


def leaves(section: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every key a section declares, by its dotted name, through every option of every group."""
    for name, field in fields_by_key(section).items():
        dotted = f"{prefix}{name}"
        nested = sections_in(field.annotation)
        if not nested or is_setup(field):
            yield dotted, field
        for child in nested:
            yield from leaves(child, f"{dotted}.")


def show(value: Any) -> str:
    """A value as it is written on the command line: true, null, 0.001, [8, 16]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return f"[{', '.join(show(v) for v in value)}]"
    if isinstance(value, dict):
        return f"{{{', '.join(f'{k}: {show(v)}' for k, v in value.items())}}}"
    return str(value)


def _bounds(metadata: list[Any]) -> str:
    """``> 0``, ``>= 1``, ``in [0, 1)`` from a key's range."""
    low = next((("(", m.gt) for m in metadata if isinstance(m, at.Gt)), None) or next(
        (("[", m.ge) for m in metadata if isinstance(m, at.Ge)), None
    )
    high = next(((")", m.lt) for m in metadata if isinstance(m, at.Lt)), None) or next(
        (("]", m.le) for m in metadata if isinstance(m, at.Le)), None
    )
    if low and high:
        return f" in {low[0]}{show(low[1])}, {show(high[1])}{high[0]}"
    if low:
        return f" {'>' if low[0] == '(' else '>='} {show(low[1])}"
    if high:
        return f" {'<' if high[0] == ')' else '<='} {show(high[1])}"
    return ""


def allowed(annotation: Any, metadata: list[Any] | None = None) -> str:
    """What a key takes, in words: ``a number > 0``, ``one of sgd, adamw``, ``true or false``."""
    metadata = list(metadata or [])
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return allowed(args[0], [*metadata, *args[1:]])
    if origin in (Union, types.UnionType):
        # a whole number or a number is a number
        members = [a for a in args if a is not type(None) and not (a is int and float in args)]
        words = [allowed(a, metadata) for a in members]
        text = ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]
        return f"{text}, or null" if type(None) in args else text
    if origin is Literal:
        return show(args[0]) if len(args) == 1 else f"one of {', '.join(show(a) for a in args)}"
    if origin is list:
        sizes = [m.min_length for m in metadata if isinstance(m, at.MinLen)]
        item = allowed(args[0]).replace("a whole number", "whole numbers")
        item = item.replace("a number", "numbers").replace("text", "strings")
        return f"a list of {f'{sizes[0]} ' if sizes else ''}{item}"
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    if annotation in words:
        return words[annotation] + ("" if annotation in (bool, str) else _bounds(metadata))
    if sections_in(annotation):
        return "a node of keys"
    return "a mapping" if annotation is dict or origin is dict else "any value"
