"""Paths that cannot be followed: a symbolic link that leads back to itself (directly or through
other links). `Path.resolve()` raises a bare RuntimeError for one, and `exists()`/`mkdir()` say
"not found" or "File exists"; `link_loop` lets a message say what the path is."""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["link_loop", "loop_note"]


def link_loop(path: str | Path) -> Path | None:
    """The part of `path` (itself or a folder above it) that is a symbolic link loop, or None."""
    path = Path(path).expanduser()
    for part in [*reversed(path.parents), path]:
        try:
            os.stat(part)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return part
            return None
    return None


def loop_note(path: str | Path) -> str:
    """' (… is a symbolic link that leads back to itself)', or '' when `path` has no loop."""
    part = link_loop(path)
    if part is None:
        return ""
    try:
        target = os.readlink(part)
    except OSError:
        target = "?"
    return f" ({part} is a symbolic link that leads back to itself: {part} -> {target}; remove or fix the link)"
