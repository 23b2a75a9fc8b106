"""A method's own knobs: one settings dataclass per method, torch-free.

Each method that has knobs of its own (FreeLB's ``adv_K``, R3F's ``r3f_lambda``, ...) declares
them in a dataclass whose fields are made with `knob`: the published default, one line of help,
and where the default comes from. `RunConfig` keeps them in its field ``algo_args`` (resolved:
every knob of the chosen method, defaults filled in), and reads them by their own names from
YAML, the command line and the notebooks' parameters, so a knob has one name everywhere.

This module imports nothing heavy: configs are built and checked without torch (the study
layer rebuilds them from records).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, get_type_hints


def knob(default: Any, help: str, *, source: str = "", choices: tuple | None = None, repr: bool = True) -> Any:
    """A settings field: its published default, what it does, and where the default is from.

    The one home of a setting's help, default and choices: `RunConfig`'s fields and the methods'
    knobs are made with it, and the command line's help, the notebooks' parameter comments and
    docs/config.md read them from the field (`knob_doc`). A list or dict default is copied for
    each instance (a ``default_factory``), so no two configs share one.
    """
    metadata = {"help": help, "source": source, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), repr=repr, metadata=metadata)
    return dataclasses.field(default=default, repr=repr, metadata=metadata)


@dataclass(frozen=True)
class KnobDoc:
    """What a `knob` field says about itself: its type (as written), default, choices, help and source."""

    name: str
    type: str
    default: Any
    choices: tuple | None
    help: str
    source: str


def knob_docs(cls: type) -> list[KnobDoc]:
    """The `KnobDoc` of every field of dataclass `cls`, in field order (a field made without `knob`
    has no help: a test keeps every field a knob)."""
    hints = get_type_hints(cls)
    docs = []
    for f in fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        docs.append(
            KnobDoc(
                f.name,
                type_name(hints[f.name]),
                default,
                f.metadata.get("choices"),
                f.metadata.get("help", ""),
                f.metadata.get("source", ""),
            )
        )
    return docs


def type_name(hint: Any) -> str:
    """``int``, ``float | None``, ``list[str]`` ...: a type as it is written."""
    if isinstance(hint, type) and not getattr(hint, "__args__", None):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def base_type(hint: Any) -> Any:
    """The type of a value, None aside: ``float | None`` -> float, ``list[str]`` -> list[str]."""
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    return args[0] if args and type(None) in getattr(hint, "__args__", ()) else hint


@dataclass
class MethodSettings:
    """The knobs of one method. Subclasses are dataclasses of `knob` fields and may override `check`."""

    algo: ClassVar[str] = ""

    @classmethod
    def knob_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> MethodSettings:
        """Settings from ``{knob: value}``; unset knobs take their published defaults."""
        if not isinstance(values, Mapping):
            raise ValueError(f"algo_args must be a mapping of {cls.algo}'s knobs, got {values!r}")
        names = cls.knob_names()
        unknown = [k for k in values if k not in names]
        if unknown:
            known = ", ".join(names) if names else "none"
            raise ValueError(f"{', '.join(map(repr, unknown))} is not a knob of algo={cls.algo!r} (its knobs: {known})")
        hints = get_type_hints(cls)
        coerced = {k: _coerce(k, v, hints[k], cls.algo) for k, v in values.items()}
        settings = cls(**coerced)
        for f in fields(settings):
            choices = f.metadata.get("choices")
            value = getattr(settings, f.name)
            if choices and value not in choices:
                raise ValueError(
                    f"{f.name} must be one of {', '.join(map(repr, choices))} for algo={cls.algo!r}; got {value!r}"
                )
        settings.check()
        return settings

    def check(self) -> None:
        """Ranges and combinations the method refuses (each error names its knob)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # helpers for `check`
    def _non_negative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0 for algo={self.algo!r}, got {value!r}")

    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number > 0 for algo={self.algo!r}, got {value!r}")


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(name: str, value: Any, hint: Any, algo: str) -> Any:
    """`value` as the knob's annotated type (numbers from YAML and the CLI arrive as text or int)."""
    base = hint
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise TypeError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base is str:
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        tname = getattr(base, "__name__", str(base))
        raise ValueError(f"{name} must be of type {tname} for algo={algo!r}, got {value!r}") from None
    return value
