"""Where the data folder is, and whether it can be used: the one module that decides both.

The data folder, in order of precedence:

1. the ``data_dir`` argument (``--data_dir``, a notebook's ``data_dir`` parameter);
2. the ``SIFTKIT_DATA_DIR`` environment variable;
3. ``./data``, if that folder exists (the kit's earlier default, still honoured);
4. the per-user cache, ``$XDG_CACHE_HOME/siftkit`` else ``~/.cache/siftkit``.

Only the cache (4) is filled on first use: `siftkit.data.loaders.load` downloads the files it
lacks there, verified by sha256. Folders named by 1-3 are the user's and are only read.

`locate_data_dir` applies that precedence once and returns a `DataFolder`; what a caller then
asks of it is answered here too: `DataFolder.checked` (it must exist, unless it is the cache a
first download creates), `DataFolder.usable_for` (also: not one dataset's own folder, named one
level too deep) and `make_data_folder` (created for a download, or why it cannot be). The
path goes down from here: `siftkit.data.download` is handed a located folder and never
locates one again, except at its own entry point (``python -m siftkit download``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from siftkit.data.registry import DATASETS, DOWNLOAD_HINT, DataError, sha256_file

__all__ = [
    "ENV_VAR",
    "DataFolder",
    "cache_dir",
    "locate_data_dir",
    "make_data_folder",
    "resolve_data_dir",
    "shown_path",
    "split_file_hashes",
]

ENV_VAR = "SIFTKIT_DATA_DIR"


def cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/siftkit``, else ``~/.cache/siftkit``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "siftkit"


@dataclass(frozen=True)
class DataFolder:
    """Where the data are read from, how that folder was chosen, and whether it is the cache."""

    path: Path
    how: str
    is_cache: bool

    def checked(self) -> Path:
        """The folder, which must exist unless it is the cache (returned even before its first
        download creates it); `DataError` naming where it came from otherwise."""
        if not self.is_cache and not self.path.is_dir():
            raise DataError(
                f"data folder {shown_path(self.path)} (from {self.how}) does not exist or is not a folder; "
                f"pass data_dir=..., set {ENV_VAR}, or fetch the data with `{DOWNLOAD_HINT}`"
            )
        return self.path

    def usable_for(self, name: str) -> Path:
        """The folder as `checked`, and not the folder of one dataset itself: a data_dir one
        level too deep (``data/cola`` for ``data``) is named with its parent, as otherwise the
        user is told a file is missing and to download what they already have."""
        root = self.checked()
        if (root / DATASETS[name].files[0].path).exists():
            return root
        for dataset in DATASETS.values():
            for spec in dataset.files:
                rel = Path(spec.path)
                if (root / rel.name).is_file() and not (root / rel).exists():
                    raise DataError(
                        f"data folder {root} holds {rel.name} itself: it looks like the {rel.parent} dataset "
                        f"folder, one level too deep; set data_dir (or ${ENV_VAR}) to the folder above it, "
                        f"{root.parent}"
                    )
        return root


def locate_data_dir(data_dir: str | os.PathLike | None = None) -> DataFolder:
    """The data folder by the precedence in this module's docstring (not checked to exist)."""
    if data_dir is not None:
        return DataFolder(Path(data_dir), "the data_dir argument", False)
    env = os.environ.get(ENV_VAR)
    if env is not None and not env.strip():
        # As data_dir="" is refused: an empty value (an unset variable in `export X=$Y`) is a
        # mistake, not "unset"; treating it as unset said "set SIFTKIT_DATA_DIR" and filled the cache.
        raise DataError(
            f"${ENV_VAR} is set but empty ({env!r}); name the data folder in it, or unset it "
            f"(`unset {ENV_VAR}`) for the default"
        )
    if env:
        return DataFolder(Path(env), f"${ENV_VAR}", False)
    local = Path("data")
    if local.is_dir():
        return DataFolder(local, "./data in the working folder", False)
    return DataFolder(cache_dir(), "the per-user cache", True)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data folder: ``data_dir``, ``$SIFTKIT_DATA_DIR``, ``./data``, or the cache.

    A folder named by ``data_dir`` or ``$SIFTKIT_DATA_DIR`` must exist (else `DataError`);
    the per-user cache is returned even before its first download creates it.
    """
    return locate_data_dir(data_dir).checked()


def make_data_folder(root: Path) -> Path:
    """Create the data folder for a download, or say in one line why it cannot be (a file in
    its place, a file above it, no permission) rather than fail deep inside the first file's mkdir."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "it is a file, not a folder" if root.is_file() else (exc.strerror or str(exc))
        raise DataError(
            f"cannot use {root} as the data folder: {why}; pass --data-dir a folder (it is created if missing)"
        ) from None
    return root


def shown_path(path: str | os.PathLike) -> str:
    """A path as messages show it: quoted when it starts or ends with white space (a leading
    space is invisible otherwise), as it is else."""
    text = str(path)
    return repr(text) if text != text.strip() or any(not ch.isprintable() for ch in text) else text


def split_file_hashes(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """sha256 of every file dataset `name`'s splits read, keyed by path relative to the data
    folder: what a run's records and the stage cache use to tell one copy of the data from
    another (a user's folder may hold files that differ from the published ones)."""
    root = resolve_data_dir(data_dir)
    rels = sorted({rel for rels in DATASETS[name].splits.values() for rel in rels})
    return {rel: sha256_file(root / rel) for rel in rels}
