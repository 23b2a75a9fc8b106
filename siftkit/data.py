"""Load the three text-classification datasets used by the SiFT paper.

Every loader returns a `datasets.DatasetDict` whose splits have a ``text`` (str) and a
``label`` (int64, 0 or 1) column plus a few dataset-specific columns:

======================  ===========================================  ==================
name                    splits (rows)                                extra columns
======================  ===========================================  ==================
``cola``                train (8551), in_domain_dev (527),           ``source``
                        out_of_domain_dev (516)
``twitter_hate``        train (31962)                                ``id``
``uci_sentiment``       pool (3000: amazon, imdb, yelp, 1000 each)   ``source``
======================  ===========================================  ==================

The files are read exactly as published (see ``DATASETS`` for their paths and sha256):
texts are never stripped, re-quoted or normalised. The one exception, the same for all three
datasets: Windows line endings (CRLF) are read as line endings (a copy saved on Windows loads
as the original does). Malformed input raises `DataError`,
whose message names the file and, where it applies, the 1-based line number.

The data folder is found by `resolve_data_dir`: the ``data_dir`` argument, else the
``SIFTKIT_DATA_DIR`` environment variable, else ``./data``. `siftkit.download` fetches
the files into it.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import datasets

__all__ = [
    "DATASETS",
    "DOWNLOAD_HINT",
    "DataError",
    "DataFile",
    "DatasetInfo",
    "load",
    "resolve_data_dir",
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

# uci_sentiment file name -> value of the `source` column
_UCI_SOURCES = {
    "amazon_cells_labelled.txt": "amazon",
    "imdb_labelled.txt": "imdb",
    "yelp_labelled.txt": "yelp",
}


def data_dir_candidate(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder `resolve_data_dir` would use, without checking that it exists."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path("data")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data folder: ``data_dir``, else ``$SIFTKIT_DATA_DIR``, else ``./data``.

    Raises `DataError` if that folder does not exist.
    """
    if data_dir is not None:
        how = "the data_dir argument"
    elif os.environ.get(ENV_VAR):
        how = f"${ENV_VAR}"
    else:
        how = f"the default ./data (neither data_dir nor ${ENV_VAR} was given)"
    path = data_dir_candidate(data_dir)
    if not path.is_dir():
        raise DataError(
            f"data folder {path} (from {how}) does not exist or is not a folder; "
            f"pass data_dir=..., set {ENV_VAR}, or fetch the data with `{DOWNLOAD_HINT}`"
        )
    return path


# --------------------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    """Read a whole file as strict UTF-8; DataError for missing, empty or undecodable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"{path}: file not found; fetch the data with `{DOWNLOAD_HINT}` "
            f"(or point data_dir / ${ENV_VAR} at a folder that has it)"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    if not raw:
        raise DataError(f"{path}: file is empty")
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path} line {line}: not valid UTF-8 "
            f"(byte {raw[exc.start:exc.start + 1]!r} at offset {exc.start}: {exc.reason})"
        ) from None
    if text.startswith("\ufeff"):  # tolerate a UTF-8 byte-order mark
        text = text[1:]
    # One rule for every dataset: Windows line endings (CRLF) are line endings, never part of
    # a label or a text. A lone CR is left as it is (no published file has one).
    return text.replace("\r\n", "\n")


def _lines(path: Path, text: str) -> list[str]:
    """Split on '\\n' only (never str.splitlines: the data contain U+0085 and friends)."""
    lines = text.split("\n")
    if lines[-1] == "":  # final newline (out_of_domain_dev.tsv has none)
        lines.pop()
    if not lines:
        raise DataError(f"{path}: file has no data lines")
    return lines


def _label(path: Path, line: int, value: str) -> int:
    if value == "0":
        return 0
    if value == "1":
        return 1
    raise DataError(f"{path} line {line}: label must be 0 or 1, got {value!r}")


def _check_text(path: Path, line: int, text: str) -> str:
    if not text.strip():
        raise DataError(f"{path} line {line}: text is empty")
    return text


def _split_fields(path: Path, line_no: int, line: str, n: int, what: str) -> list[str]:
    fields = line.split("\t")
    if len(fields) != n:
        raise DataError(
            f"{path} line {line_no}: expected {n} tab-separated fields ({what}), "
            f"got {len(fields)}"
        )
    return fields


def _read_cola(path: Path) -> dict[str, list]:
    """``source<TAB>label<TAB>original_mark<TAB>sentence``, no header, no quoting."""
    cols: dict[str, list] = {"text": [], "label": [], "source": []}
    what = "source, label, original_mark, sentence"
    for i, line in enumerate(_lines(path, _read_text(path)), start=1):
        source, label, _mark, sentence = _split_fields(path, i, line, 4, what)
        cols["label"].append(_label(path, i, label))
        cols["text"].append(_check_text(path, i, sentence))
        cols["source"].append(source)
    return cols


def _read_twitter(path: Path) -> dict[str, list]:
    """RFC-4180 CSV with header ``id,label,tweet``; tweets kept byte-exact."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    cols: dict[str, list] = {"id": [], "text": [], "label": []}
    try:
        header = next(reader)
        missing = [c for c in ("id", "label", "tweet") if c not in header]
        if missing:
            raise DataError(
                f"{path} line 1: CSV header {header!r} lacks column(s) {', '.join(missing)}"
            )
        i_id, i_label, i_tweet = (header.index(c) for c in ("id", "label", "tweet"))
        start = reader.line_num + 1  # first physical line of the next record
        for row in reader:
            if len(row) != len(header):
                raise DataError(
                    f"{path} line {start}: expected {len(header)} CSV fields "
                    f"({','.join(header)}), got {len(row)}"
                )
            try:
                row_id = int(row[i_id])
            except ValueError:
                raise DataError(
                    f"{path} line {start}: id must be an integer, got {row[i_id]!r}"
                ) from None
            cols["id"].append(row_id)
            cols["label"].append(_label(path, start, row[i_label]))
            cols["text"].append(_check_text(path, start, row[i_tweet]))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: malformed CSV: {exc}") from None
    if not cols["id"]:
        raise DataError(f"{path}: no data rows after the header")
    return cols


def _read_uci(path: Path) -> dict[str, list]:
    """``sentence<TAB>label``, no header, no quoting; sentences kept exactly.

    Nothing is stripped: imdb sentences keep the two trailing spaces they have in the
    file, and a '"' is an ordinary character (pandas' default quoting would merge lines).
    """
    source = _UCI_SOURCES[path.name]
    cols: dict[str, list] = {"text": [], "label": [], "source": []}
    for i, line in enumerate(_lines(path, _read_text(path)), start=1):
        sentence, label = _split_fields(path, i, line, 2, "sentence, label")
        cols["label"].append(_label(path, i, label))
        cols["text"].append(_check_text(path, i, sentence))
        cols["source"].append(source)
    return cols


def _check_not_a_dataset_folder(root: Path, info: DatasetInfo) -> None:
    """data_dir one level too deep (``data/cola`` for ``data``): name the parent.

    Otherwise the user is told a file is missing and to download what they already have.
    """
    if (root / info.files[0].path).exists():
        return
    for dataset in DATASETS.values():
        for spec in dataset.files:
            rel = Path(spec.path)
            if (root / rel.name).is_file() and not (root / rel).exists():
                raise DataError(
                    f"data folder {root} holds {rel.name} itself: it looks like the {rel.parent} dataset "
                    f"folder, one level too deep; set data_dir (or ${ENV_VAR}) to the folder above it, "
                    f"{root.parent}")


_READERS = {"cola": _read_cola, "twitter_hate": _read_twitter, "uci_sentiment": _read_uci}

_FEATURES = {
    "cola": datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.Value("int64"),
         "source": datasets.Value("string")}
    ),
    "twitter_hate": datasets.Features(
        {"id": datasets.Value("int64"), "text": datasets.Value("string"),
         "label": datasets.Value("int64")}
    ),
    "uci_sentiment": datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.Value("int64"),
         "source": datasets.Value("string")}
    ),
}


def load(name: str, data_dir: str | os.PathLike | None = None) -> datasets.DatasetDict:
    """Load dataset ``name`` ("cola", "twitter_hate" or "uci_sentiment") from ``data_dir``.

    - cola: splits ``train``, ``in_domain_dev``, ``out_of_domain_dev``; columns
      ``text``, ``label``, ``source`` (the ``original_mark`` column is dropped).
    - twitter_hate: split ``train``; columns ``id``, ``text``, ``label``. Tweets keep
      their leading/trailing whitespace and their (upstream) mojibake.
    - uci_sentiment: split ``pool`` (amazon, then imdb, then yelp, each in file order);
      columns ``text``, ``label``, ``source``. Sentences are NOT stripped (imdb ones end
      in two spaces, as in the file).

    Raises ValueError for an unknown name and `DataError` for a missing data folder or a
    missing/malformed file.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = resolve_data_dir(data_dir)
    info = DATASETS[name]
    _check_not_a_dataset_folder(root, info)
    reader = _READERS[name]
    features = _FEATURES[name]
    splits = {}
    for split, relpaths in info.splits.items():
        cols: dict[str, list] = {c: [] for c in features}
        for rel in relpaths:
            part = reader(root / rel)
            for c in cols:
                cols[c].extend(part[c])
        splits[split] = datasets.Dataset.from_dict(cols, features=features, split=split)
    return datasets.DatasetDict(splits)
