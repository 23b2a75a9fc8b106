"""Load the three text-classification datasets used by the SiFT paper, and the CrowdFlower tweets.

Every loader returns a `datasets.DatasetDict` whose splits have a ``text`` (str) and a
``label`` (int64, 0 or 1; 0, 1 or 2 for ``crowdflower_tweets``) column plus a few
dataset-specific columns:

======================  ===========================================  ==================
name                    splits (rows)                                extra columns
======================  ===========================================  ==================
``cola``                train (8551), in_domain_dev (527),           ``source``
                        out_of_domain_dev (516)
``twitter_hate``        train (31962)                                ``id``
``uci_sentiment``       pool (3000: amazon, imdb, yelp, 1000 each)   ``source``
``crowdflower_tweets``  all (38158; negative, neutral, positive)     ``sentiment``,
                                                                     ``confidence``,
                                                                     ``topic``,
                                                                     ``label_conflict``,
                                                                     ``row``
======================  ===========================================  ==================

``crowdflower_tweets`` is read by `siftkit.data.crowdflower`, which states its decoding rule
(the file is not UTF-8), its rows and how its topics are derived.

The files are read exactly as published (see ``DATASETS`` for their paths and sha256):
texts are never stripped, re-quoted or normalised. The one exception, the same for the three
paper datasets: Windows line endings (CRLF) are read as line endings (a copy saved on Windows loads
as the original does); the CrowdFlower file's rows end with CRLF. Malformed input raises `DataError`,
whose message names the file and, where it applies, the 1-based line number.

The data folder is found by `siftkit.data.folder` (once per `load`): the ``data_dir``
argument, else the ``SIFTKIT_DATA_DIR`` environment variable, else ``./data`` if it
exists, else the per-user cache (``$XDG_CACHE_HOME/siftkit`` or ``~/.cache/siftkit``).
Only the cache is filled on first use: `load` downloads the files it lacks there, checked
by sha256, with `siftkit.data.download` (the code behind ``python -m siftkit download``).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import datasets

from siftkit.data import crowdflower
from siftkit.data.download import ensure_files
from siftkit.data.folder import ENV_VAR, locate_data_dir
from siftkit.data.registry import DATASETS, DOWNLOAD_HINT, DataError

__all__ = ["load"]

# uci_sentiment file name -> value of the `source` column
_UCI_SOURCES = {
    "amazon_cells_labelled.txt": "amazon",
    "imdb_labelled.txt": "imdb",
    "yelp_labelled.txt": "yelp",
}


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
            f"(byte {raw[exc.start : exc.start + 1]!r} at offset {exc.start}: {exc.reason})"
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
    from siftkit.data.text_files import describe_invisible, invisible

    if not text.strip():
        raise DataError(f"{path} line {line}: text is empty")
    if invisible(text):  # a zero-width space alone: nothing a tokenizer can read
        raise DataError(f"{path} line {line}: text holds no visible character ({text!r}: {describe_invisible(text)})")
    return text


def _split_fields(path: Path, line_no: int, line: str, n: int, what: str) -> list[str]:
    fields = line.split("\t")
    if len(fields) != n:
        raise DataError(f"{path} line {line_no}: expected {n} tab-separated fields ({what}), got {len(fields)}")
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
        twice = sorted({c for c in header if header.count(c) > 1} & {"id", "label", "tweet"})
        if twice:
            # csv and header.index() would silently read the first of them.
            raise DataError(f"{path} line 1: CSV header {header!r} names column(s) {', '.join(twice)} more than once")
        missing = [c for c in ("id", "label", "tweet") if c not in header]
        if missing:
            raise DataError(f"{path} line 1: CSV header {header!r} lacks column(s) {', '.join(missing)}")
        i_id, i_label, i_tweet = (header.index(c) for c in ("id", "label", "tweet"))
        start = reader.line_num + 1  # first physical line of the next record
        for row in reader:
            if len(row) != len(header):
                raise DataError(
                    f"{path} line {start}: expected {len(header)} CSV fields ({','.join(header)}), got {len(row)}"
                )
            try:
                row_id = int(row[i_id])
            except ValueError:
                raise DataError(f"{path} line {start}: id must be an integer, got {row[i_id]!r}") from None
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


_READERS = {
    "cola": _read_cola,
    "twitter_hate": _read_twitter,
    "uci_sentiment": _read_uci,
    "crowdflower_tweets": crowdflower.read,
}

_FEATURES = {
    "cola": datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.Value("int64"), "source": datasets.Value("string")}
    ),
    "twitter_hate": datasets.Features(
        {"id": datasets.Value("int64"), "text": datasets.Value("string"), "label": datasets.Value("int64")}
    ),
    "uci_sentiment": datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.Value("int64"), "source": datasets.Value("string")}
    ),
    "crowdflower_tweets": crowdflower.FEATURES,
}


def load(name: str, data_dir: str | os.PathLike | None = None) -> datasets.DatasetDict:
    """Load dataset ``name`` ("cola", "twitter_hate", "uci_sentiment" or "crowdflower_tweets") from ``data_dir``.

    - cola: splits ``train``, ``in_domain_dev``, ``out_of_domain_dev``; columns
      ``text``, ``label``, ``source`` (the ``original_mark`` column is dropped).
    - twitter_hate: split ``train``; columns ``id``, ``text``, ``label``. Tweets keep
      their leading/trailing whitespace and their (upstream) mojibake.
    - uci_sentiment: split ``pool`` (amazon, then imdb, then yelp, each in file order);
      columns ``text``, ``label``, ``source``. Sentences are NOT stripped (imdb ones end
      in two spaces, as in the file).
    - crowdflower_tweets: split ``all``; columns ``text``, ``label`` (0 negative, 1 neutral,
      2 positive), ``sentiment``, ``confidence`` (None where not given), ``topic``,
      ``label_conflict``, ``row`` (`siftkit.data.crowdflower`).

    With no ``data_dir``, no ``$SIFTKIT_DATA_DIR`` and no ``./data``, the files come from
    the per-user cache, and any that are missing there or fail their sha256 are downloaded
    first (once; later calls find them). Offline, that raises one `DataError` naming the
    ways out.

    Raises ValueError for an unknown name and `DataError` for a missing data folder, a
    missing/malformed file, or a failed first download.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    folder = locate_data_dir(data_dir)  # decided once; the steps below are handed the result
    if folder.is_cache:
        ensure_files([name], folder.path)
    root = folder.usable_for(name)
    info = DATASETS[name]
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
