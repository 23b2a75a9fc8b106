"""The dataset registry (every published file with its sha256) and where the data folder is.

Shared by `siftkit.data.loaders` (which reads the files) and `siftkit.data.download` (which fetches
them), so that neither imports the other's internals.

The data folder, in order of precedence:

1. the ``data_dir`` argument (``--data_dir``, a notebook's ``data_dir`` parameter);
2. the ``SIFTKIT_DATA_DIR`` environment variable;
3. ``./data``, if that folder exists (the kit's earlier default, still honoured);
4. the per-user cache, ``$XDG_CACHE_HOME/siftkit`` else ``~/.cache/siftkit``.

Only the cache (4) is filled on first use: `siftkit.data.loaders.load` downloads the files it
lacks there, verified by sha256. Folders named by 1-3 are the user's and are only read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

__all__ = [
    "DATASETS",
    "DOWNLOAD_HINT",
    "ENV_VAR",
    "DataError",
    "DataFile",
    "DataFolder",
    "DatasetInfo",
    "cache_dir",
    "data_dir_candidate",
    "locate_data_dir",
    "resolve_data_dir",
    "sha256_file",
    "split_file_hashes",
]

ENV_VAR = "SIFTKIT_DATA_DIR"
DOWNLOAD_HINT = "python -m siftkit download"


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class DataFile:
    """One published file: its path relative to the data folder, sha256 and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: which files make up each split, and every file it ships (with hashes)."""

    name: str
    splits: Mapping[str, tuple[str, ...]]
    files: tuple[DataFile, ...]
    description: str = ""
    extra_columns: tuple[str, ...] = field(default=())


DATASETS: dict[str, DatasetInfo] = {
    "cola": DatasetInfo(
        name="cola",
        splits={
            "train": ("cola/in_domain_train.tsv",),
            "in_domain_dev": ("cola/in_domain_dev.tsv",),
            "out_of_domain_dev": ("cola/out_of_domain_dev.tsv",),
        },
        files=(
            DataFile("cola/in_domain_train.tsv",
                     "f320a10f92d3bce6b29152fde322a362eac39238e50d8de0c8815457fdf4fc12", 428578),
            DataFile("cola/in_domain_dev.tsv",
                     "77176f6a03faa5a1c4f23c69971fc1bff565931112fb65af47b2d6e24b7f42f7", 25957),
            DataFile("cola/out_of_domain_dev.tsv",
                     "201b9c57b2a20f1282242eec0ed8995729e3be19c29a46c047b3727338836c05", 27754),
            DataFile("cola/cola_public_README.txt",
                     "b056fc502a7820e87daf24520083c48951571fa12b2ef4f9707ff9ff08c0256e", 6570),
        ),
        description="Corpus of Linguistic Acceptability v1.1 (raw TSV); 1 = acceptable.",
        extra_columns=("source",),
    ),
    "twitter_hate": DatasetInfo(
        name="twitter_hate",
        splits={"train": ("twitter_hate/train.csv",)},
        files=(
            DataFile("twitter_hate/train.csv",
                     "4f1bfabc2908029734fb2acd34028a8dfd1b92098bddfe60b0f0836c964e26ab", 3103165),
            DataFile("twitter_hate/test.csv",
                     "37d1766af69d706d87fbb65d585922046ba709a6b71b13caac5ebcb45edb9c4f", 1635543),
        ),
        description="Analytics Vidhya Twitter hate speech; 1 = racist or sexist.",
        extra_columns=("id",),
    ),
    "uci_sentiment": DatasetInfo(
        name="uci_sentiment",
        splits={
            "pool": (
                "uci_sentiment/amazon_cells_labelled.txt",
                "uci_sentiment/imdb_labelled.txt",
                "uci_sentiment/yelp_labelled.txt",
            )
        },
        files=(
            DataFile("uci_sentiment/amazon_cells_labelled.txt",
                     "47003fc0a0d4840b00e96e715b6189bad09e7443a3da41c4cbe12ffc79f86ae3", 58226),
            DataFile("uci_sentiment/imdb_labelled.txt",
                     "aef2e49e3da25714d61175e3a6e68eeef74a20a2f914318dc3be9947ea86512d", 85285),
            DataFile("uci_sentiment/yelp_labelled.txt",
                     "c76468b7b5c6e56a0804d728345c5f84aa2142ddb214420f61cc9cfd4c00d2ea", 61320),
            DataFile("uci_sentiment/readme.txt",
                     "736c26aa54e3614459e50314ece0698051f0923d108ed53938dcb1aa0483bfd4", 1070),
        ),
        description="UCI Sentiment Labelled Sentences (Kotzias et al. 2015); 1 = positive.",
        extra_columns=("source",),
    ),
}


# --------------------------------------------------------------------------- the folder


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


def locate_data_dir(data_dir: str | os.PathLike | None = None) -> DataFolder:
    """The data folder by the precedence in this module's docstring (not checked to exist)."""
    if data_dir is not None:
        return DataFolder(Path(data_dir), "the data_dir argument", False)
    env = os.environ.get(ENV_VAR)
    if env is not None and not env.strip():
        # As data_dir="" is refused: an empty value (an unset variable in `export X=$Y`) is a
        # mistake, not "unset"; treating it as unset said "set SIFTKIT_DATA_DIR" and filled the cache.
        raise DataError(f"${ENV_VAR} is set but empty ({env!r}); name the data folder in it, or unset it "
                        f"(`unset {ENV_VAR}`) for the default")
    if env:
        return DataFolder(Path(env), f"${ENV_VAR}", False)
    local = Path("data")
    if local.is_dir():
        return DataFolder(local, "./data in the working folder", False)
    return DataFolder(cache_dir(), "the per-user cache", True)


def data_dir_candidate(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder `resolve_data_dir` would use, without checking that it exists."""
    return locate_data_dir(data_dir).path


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data folder: ``data_dir``, ``$SIFTKIT_DATA_DIR``, ``./data``, or the cache.

    A folder named by ``data_dir`` or ``$SIFTKIT_DATA_DIR`` must exist (else `DataError`);
    the per-user cache is returned even before its first download creates it.
    """
    folder = locate_data_dir(data_dir)
    if not folder.is_cache and not folder.path.is_dir():
        raise DataError(
            f"data folder {shown_path(folder.path)} (from {folder.how}) does not exist or is not a folder; "
            f"pass data_dir=..., set {ENV_VAR}, or fetch the data with `{DOWNLOAD_HINT}`"
        )
    return folder.path


def shown_path(path: str | os.PathLike) -> str:
    """A path as messages show it: quoted when it starts or ends with white space (a leading
    space is invisible otherwise), as it is else."""
    text = str(path)
    return repr(text) if text != text.strip() or any(not ch.isprintable() for ch in text) else text


# --------------------------------------------------------------------------- fingerprints

_CHUNK = 1 << 16


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def split_file_hashes(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """sha256 of every file dataset `name`'s splits read, keyed by path relative to the data
    folder: what a run's records and the stage cache use to tell one copy of the data from
    another (a user's folder may hold files that differ from the published ones)."""
    root = resolve_data_dir(data_dir)
    rels = sorted({rel for rels in DATASETS[name].splits.values() for rel in rels})
    return {rel: sha256_file(root / rel) for rel in rels}
