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

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping, get_type_hints


def knob(default: Any, help: str, *, source: str = "", choices: tuple | None = None) -> Any:
    """A settings field: its published default, what it does, and where the default is from."""
    return dataclasses.field(default=default, metadata={"help": help, "source": source, "choices": choices})


@dataclass
class MethodSettings:
    """The knobs of one method. Subclasses are dataclasses of `knob` fields and may override `check`."""

    algo: ClassVar[str] = ""

    @classmethod
    def knob_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "MethodSettings":
        """Settings from ``{knob: value}``; unset knobs take their published defaults."""
        if not isinstance(values, Mapping):
            raise ValueError(f"algo_args must be a mapping of {cls.algo}'s knobs, got {values!r}")
        names = cls.knob_names()
        unknown = [k for k in values if k not in names]
        if unknown:
            known = ", ".join(names) if names else "none"
            raise ValueError(f"{', '.join(map(repr, unknown))} is not a knob of algo={cls.algo!r} (its knobs: "
                             f"{known})")
        hints = get_type_hints(cls)
        coerced = {k: _coerce(k, v, hints[k], cls.algo) for k, v in values.items()}
        settings = cls(**coerced)
        for f in fields(settings):
            choices = f.metadata.get("choices")
            value = getattr(settings, f.name)
            if choices and value not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(map(repr, choices))} for algo={cls.algo!r}; "
                                 f"got {value!r}")
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
