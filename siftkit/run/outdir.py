"""One run at a time in an output folder, and no empty folder left behind by a failed run.

`OutputDirLock` holds an exclusive `fcntl.flock` on ``<output_dir>/.siftkit.lock`` for as long
as a run trains. A second run into the same folder is refused at once (two runs there would
mix their checkpoints, and the later one would lose its results to the earlier one's
results.json). The operating system drops the lock when its process ends, however it ends,
so a run killed with SIGKILL never blocks the next one; the file itself is removed when the
run ends normally or with an error. Where `fcntl` does not exist (Windows) there is no lock.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path

from siftkit.run.records import OutputDirError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_FILE = ".siftkit.lock"


class OutputDirLock:
    """An exclusive lock on an output folder; `acquire` raises OutputDirError if another
    process holds it, naming that process (``pid N on HOST``)."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder, self._fd = folder, fd

    @classmethod
    def acquire(cls, folder: str | Path) -> "OutputDirLock":
        folder = Path(folder)
        if fcntl is None:
            return cls(folder, None)
        path = folder / LOCK_FILE
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise OutputDirError(
                    f"output_dir {str(folder)!r} is in use by another run ({holder}); two runs in one "
                    f"folder would mix their checkpoints and results: wait for it to end or choose "
                    f"another output_dir") from None
            # The holder before us may have removed the file between our open and our lock:
            # then we hold a lock on a file nobody else will see; take the one at `path`.
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError as exc:
            # A full disk: the file was created, its text could not be written. Leave nothing.
            path.unlink(missing_ok=True)
            os.close(fd)
            if is_disk_full(exc, folder):
                raise OutputDirError(no_space_message(path, "the run's lock file")) from None
            raise OutputDirError(f"output_dir {str(folder)!r} is not writable: cannot write {path}: "
                                 f"{exc.strerror or exc}") from None
        return cls(folder, fd)

    def release(self) -> None:
        """Remove the lock file (while still holding the lock), then drop the lock."""
        if self._fd is None:
            return
        try:
            (self.folder / LOCK_FILE).unlink(missing_ok=True)
        except OSError:
            pass  # a lock file left behind blocks nothing: the lock itself ends with the fd
        os.close(self._fd)
        self._fd = None


def missing_folders(path: str | Path) -> list[Path]:
    """`path` and its parents that do not exist yet, deepest first (what a mkdir would create)."""
    path = Path(path).absolute()
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty; a folder with anything in it
    (a checkpoint to resume from, the user's own files) is kept, and so are its parents."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


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
