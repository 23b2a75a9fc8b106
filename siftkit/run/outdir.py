"""A run's output folder, prepared before anything is trained: the one place that decides
whether a run may write there.

`OutputDir` holds the checks every way into a run makes (`siftkit.run.training.train`, a
notebook's first cell through `siftkit.explore.notebook.prepare_output_dir`), in the order a run
needs them:

- `OutputDir.check`: not a file; an earlier run's results.json is replaced only with
  ``overwrite`` (and there is nothing to ``resume``); the folder can be created and written.
- `OutputDir.earlier_checkpoints`: an unfinished run's checkpoints are continued only with
  ``resume`` and replaced only with ``overwrite``.
- `OutputDir.prepared`: `check`, and the folders it created removed again if the run fails
  while they are still empty (a folder with checkpoints is kept, to resume from).
- `OutputDir.locked`: one run at a time in the folder, checked again under the lock.
- `OutputDir.preflight`: `check` and `earlier_checkpoints`, leaving nothing behind.

What the refusals tell the user to do is a `WaysOut`: train()'s arguments by default, a
notebook's parameters in a notebook. `finished` is the sweep's question (is there a
results.json to skip the run for).

`OutputDirLock` holds an exclusive `fcntl.flock` on ``<output_dir>/.siftkit.lock`` for as long
as a run trains. A second run into the same folder is refused at once (two runs there would
mix their checkpoints, and the later one would lose its results to the earlier one's
results.json). The operating system drops the lock when its process ends, however it ends,
so a run killed with SIGKILL never blocks the next one; the file itself is removed when the
run ends normally or with an error. Where `fcntl` does not exist (Windows) there is no lock.

Imports go one way: this module reads `siftkit.run.records` (the file names, `OutputDirError`)
and `siftkit.run.checkpoint`; neither imports it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from siftkit.run.checkpoint import list_checkpoints
from siftkit.run.diskspace import is_disk_full, no_space_message
from siftkit.run.records import RESULTS_FILE, OutputDirError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_FILE = ".siftkit.lock"


@dataclass(frozen=True)
class WaysOut:
    """What the refusals an earlier run's files cause tell the user to do. The defaults name
    train()'s arguments (and the CLI's options); a notebook names its parameters instead."""

    # Added, after "; ", to a refusal for an earlier results.json (not to one for a folder that
    # cannot be written, where overwrite changes nothing).
    results: str | None = None
    # What follows "output_dir '...' " when an unfinished run's checkpoints are in the way.
    checkpoints: str = (
        "holds checkpoints of an earlier run; pass resume=True (--resume) to continue it, "
        "or overwrite=True to start over"
    )


class OutputDir:
    """A run's output folder and what the run was asked to do with an earlier run's files."""

    def __init__(self, path: str | Path, *, overwrite: bool, resume: bool = False, ways_out: WaysOut = WaysOut()):
        self.path, self.overwrite, self.resume, self.ways_out = Path(path), overwrite, resume, ways_out

    def check(self) -> Path:
        """Fail before any training if results would be lost or cannot be written; the folder
        exists afterwards."""
        out = self.path
        try:
            is_file = out.exists() and not out.is_dir()
            results = out / RESULTS_FILE
            has_results = not is_file and results.exists()
        except OSError as exc:  # e.g. a parent folder this user may not enter
            raise OutputDirError(f"output_dir {str(out)!r} is not writable: {exc.strerror or exc}") from None
        if is_file:
            raise OutputDirError(f"output_dir {str(out)!r} is a file, not a folder")
        if has_results and not self.overwrite and self.resume:
            raise OutputDirError(
                self._about_results(
                    f"output_dir {str(out)!r} already holds {RESULTS_FILE}: that run finished, there is "
                    f"nothing to resume; choose another output_dir or pass overwrite=True to run it again"
                )
            )
        if has_results and not self.overwrite:
            raise OutputDirError(
                self._about_results(
                    f"output_dir {str(out)!r} already holds {RESULTS_FILE} from an earlier run; "
                    f"choose another output_dir or pass overwrite=True (--overwrite true) to replace it"
                )
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
                pass
        except OSError as exc:
            from siftkit.core.paths import loop_note

            raise OutputDirError(
                f"output_dir {str(out)!r} is not writable: {exc.strerror or exc}{loop_note(out)}"
            ) from None
        return out

    def _about_results(self, message: str) -> str:
        return f"{message}; {self.ways_out.results}" if self.ways_out.results else message

    def earlier_checkpoints(self) -> list[Path]:
        """The checkpoints an earlier run left here (oldest first); `OutputDirError` when the
        run may neither continue them (``resume``) nor start over (``overwrite``)."""
        found = list_checkpoints(self.path)
        if found and not self.resume and not self.overwrite:
            raise OutputDirError(f"output_dir {str(self.path)!r} {self.ways_out.checkpoints}")
        return found

    @contextlib.contextmanager
    def prepared(self) -> Iterator[Path]:
        """`check` for the block; if the block fails, the folders `check` created are removed
        again while they are still empty."""
        created = missing_folders(self.path)
        try:
            yield self.check()
        except BaseException:
            remove_empty_folders(created)
            raise

    @contextlib.contextmanager
    def locked(self, is_main: bool = True, all_agree: Callable[[bool], bool] = bool) -> Iterator[None]:
        """The main process holds the folder's `OutputDirLock` for the block; every process
        fails if it could not (`all_agree` and-s a flag over the processes). Checked again
        under the lock: a run that held it may have finished meanwhile."""
        lock, error = None, None
        if is_main:
            try:
                lock = OutputDirLock.acquire(self.path)
            except OutputDirError as exc:
                error = exc
        try:
            if not all_agree(error is None):
                raise error or OutputDirError(
                    f"output_dir {str(self.path)!r} is in use by another run (the main process could not lock it)"
                )
            self.check()
            yield
        finally:
            if lock is not None:
                lock.release()

    def preflight(self) -> Path:
        """`check` and `earlier_checkpoints` long before a run starts, leaving no folder
        behind: the run makes it, and removes it again if it fails."""
        created = missing_folders(self.path)
        try:
            out = self.check()
        finally:
            remove_empty_folders(created)
        self.earlier_checkpoints()
        return out


def finished(folder: str | Path) -> bool:
    """Whether a run in `folder` finished: its results.json is there (what a sweep skips)."""
    return (Path(folder) / RESULTS_FILE).is_file()


class OutputDirLock:
    """An exclusive lock on an output folder; `acquire` raises OutputDirError if another
    process holds it, naming that process (``pid N on HOST``)."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder, self._fd = folder, fd

    @classmethod
    def acquire(cls, folder: str | Path) -> OutputDirLock:
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
                    f"another output_dir"
                ) from None
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
            raise OutputDirError(
                f"output_dir {str(folder)!r} is not writable: cannot write {path}: {exc.strerror or exc}"
            ) from None
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
