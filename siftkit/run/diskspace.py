"""A write that failed for want of space, said as such: the file system to clean up and the
file that could not be written.

Its own module, below both of its users: `siftkit.run.checkpoint` (a checkpoint torch could
not finish) and `siftkit.run.outdir` (the run's lock file). `outdir` also reads checkpoints, so
these helpers living in `outdir` would make the two import each other.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

__all__ = ["is_disk_full", "no_space_message"]

# Below this many free bytes a failed write is taken to be a full disk (torch's writer
# reports ENOSPC as a RuntimeError without an errno).
_NEARLY_FULL = 64 << 20


def is_disk_full(exc: BaseException, path: str | Path) -> bool:
    """Whether `exc`, raised while writing under `path`, came from a full file system."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left" in str(exc):
        return True
    try:
        return shutil.disk_usage(_existing(Path(path))).free < _NEARLY_FULL
    except OSError:
        return False


def no_space_message(path: str | Path, what: str) -> str:
    """'no space left on device <mount point> at <path> (writing ...)': the file system to
    clean up, and the file that could not be written."""
    folder = _existing(Path(path))
    mount = folder.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return f"no space left on device {mount} at {path} (writing {what}); free some space there, then run again"


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
