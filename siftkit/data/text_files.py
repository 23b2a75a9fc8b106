"""Reading a shift spec's local text files (csv, tsv, json/jsonl) row by row, with errors that
name the file, the line and the cause.

`datasets`' csv and json builders (pandas and pyarrow underneath) cannot say which line of a
file is wrong, read a file in one encoding only, quote tab-separated text, rename a repeated
header column to ``review.1`` and fill a short row with missing values without a word. These
readers do what a corpus of real text needs:

- **Encodings**: UTF-8 by default (a byte-order mark is dropped); any other with the spec's
  ``encoding`` (``cp1252``, ``latin-1``, ...), or a list such as ``[utf-8, cp1252]`` for a file
  that mixes them (scraped corpora do): each line is decoded in the first that fits. A line
  that does not decode is named with its byte and the way out.
- **Tab-separated files are read without quoting**, as GLUE's readers do (``csv.reader(...,
  quotechar=None)``): a ``"`` is part of the text, so a text that starts with ``"`` cannot
  swallow the rows up to the next ``"``.
- **Comma-separated files** are read with quoting, strictly (a ``"`` closing a quoted field
  must be followed by a comma or the end of the line). A quoted field that spans lines and
  holds lines that read as rows of their own (the label column holding a label) is refused:
  that is a stray quote merging rows, not a multi-line text.
- A repeated header name, a row with fewer fields than the columns the spec reads (a footer),
  more fields than the header, an unclosed quote: the line and what to do.
- **JSON**: JSON Lines (one object per line), a list of objects, or an object of equal-length
  columns (``{"text": [...], "label": [...]}``). A malformed line is named, with its column.

Values come out as pandas would type them: a column whose every value is an integer (a
float) holds ints (floats); an empty csv field is missing (None).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_ENCODING = ("utf-8",)
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)")
_SHOWN = 60  # characters of a line or value quoted in a message


class Rows:
    """A read file's rows as columns (the part of `datasets.Dataset` that loading uses)."""

    def __init__(self, columns: dict[str, list]):
        self.columns = columns
        self.column_names = list(columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> list:
        return self.columns[name]

    def select(self, indices) -> Rows:
        indices = [int(i) for i in indices]
        return Rows({k: [v[i] for i in indices] for k, v in self.columns.items()})


def check_encoding(value: Any, where: str) -> tuple[str, ...]:
    """The spec's ``encoding``: a codec name or a list of them (each line in the first that fits)."""
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(
            f"{where}.encoding must be an encoding name (e.g. cp1252) or a list of them tried line by "
            f"line (e.g. [utf-8, cp1252]), got {value!r}"
        )
    for name in names:
        try:
            codecs.lookup(name)
        except LookupError:
            raise ValueError(
                f"{where}.encoding: unknown encoding {name!r}; e.g. utf-8, cp1252, latin-1, utf-16"
            ) from None
        if len(names) > 1 and "\n".encode(name) != b"\n":
            raise ValueError(
                f"{where}.encoding: {name!r} cannot be tried line by line (its line ends are not "
                f"the byte 0x0a); give it alone, encoding: {name}"
            )
    return tuple(names)


def short(value: Any, limit: int = _SHOWN) -> str:
    """repr(value), cut to `limit` characters (a whole column in one cell must not fill a screen)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def invisible(text: str) -> bool:
    """True for a text of spaces and invisible characters only (a zero-width space U+200B, a
    byte-order mark, a no-break space, control characters): nothing a tokenizer can read."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Zs", "Zl", "Zp", "Cc", "Cf") for ch in text)


def describe_invisible(text: str) -> str:
    """'U+200B ZERO WIDTH SPACE' for each different character of an invisible text."""
    seen = dict.fromkeys(text)
    return ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, 'control character')}" for ch in list(seen)[:4])


# ----------------------------------------------------------------------------- decoding


def decode(path: Path, shown: str, where: str, encodings: Sequence[str]) -> str:
    data = path.read_bytes()
    if len(encodings) == 1:
        name = encodings[0]
        if codecs.lookup(name).name == "utf-8":
            name = "utf-8-sig"  # a byte-order mark is not text
        try:
            return data.decode(name)
        except UnicodeDecodeError as exc:
            raise ValueError(_undecodable(data, exc, shown, where, encodings)) from None
    lines = []
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        for name in encodings:
            try:
                lines.append(raw.decode("utf-8-sig" if number == 1 and codecs.lookup(name).name == "utf-8" else name))
                break
            except UnicodeDecodeError:
                continue
        else:
            exc = _first_error(raw, encodings[0])
            raise ValueError(
                f"{where}: {shown} line {number} fits none of the encodings {', '.join(encodings)} "
                f"(byte {raw[exc.start : exc.start + 1]!r} at column {exc.start + 1}); add the "
                f"encoding it is in to {where}.encoding"
            )
    return "".join(lines)


def _first_error(raw: bytes, name: str) -> UnicodeDecodeError:
    try:
        raw.decode(name)
    except UnicodeDecodeError as exc:
        return exc
    return UnicodeDecodeError(name, raw, 0, 1, "undecodable")


def _undecodable(data: bytes, exc: UnicodeDecodeError, shown: str, where: str, encodings: Sequence[str]) -> str:
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    bad = data[exc.start : exc.start + 1]
    text = f"{where}: {shown} line {line} is not valid {encodings[0]} (byte {bad!r} at column {column}: {exc.reason})"
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return f"{text}; the file starts with a UTF-16 byte-order mark: set {where}.encoding: utf-16"
    return (
        f"{text}; name the file's encoding with {where}.encoding (e.g. encoding: cp1252 for Windows text, or "
        f"latin-1), or for a file that mixes encodings a list tried line by line, e.g. encoding: [utf-8, cp1252]"
    )


# ----------------------------------------------------------------------------- csv and tsv


def read_delimited(text: str, shown: str, where: str, tab: bool, needed: Sequence[str], label: str) -> Rows:
    """Rows of a csv (quoted, strictly) or tsv (no quoting) text; `needed`: the columns the spec
    reads (a row must have them), `label`: the label column (for the merged-rows check)."""
    options = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if tab else dict(delimiter=",", strict=True)
    reader = csv.reader(io.StringIO(text, newline=""), **options)
    records: list[tuple[int, int, list[str]]] = []  # (first line, last line, fields)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ValueError(_csv_error(exc, text, shown, where, start, reader.line_num)) from None
        if fields or reader.line_num > start:  # a blank line is no row
            records.append((start, reader.line_num, fields))
    if not records:
        raise ValueError(f"{where}: file {shown} is empty")
    (_, _, header), rows = records[0], records[1:]
    header = [h if h else f"Unnamed: {i}" for i, h in enumerate(header)]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise ValueError(
            f"{where}: {shown} line 1: the header names column(s) {', '.join(map(repr, twice))} more "
            f"than once ({', '.join(header)}); give each column its own name"
        )
    used = [header.index(c) for c in needed if c in header]
    for n, (first, _last, fields) in enumerate(rows, start=1):
        if len(fields) > len(header):
            raise ValueError(
                f"{where}: {shown} line {first}: {len(fields)} fields, where the header has "
                f"{len(header)} ({', '.join(header)}); "
                + (
                    "a tab inside a text? Tab-separated files cannot hold one"
                    if tab
                    else 'a comma inside a text must be inside a quoted field ("...")'
                )
            )
        if used and max(used) >= len(fields):
            missing = [header[i] for i in used if i >= len(fields)]
            footer = " at the end of the file: a footer or a note? Remove it" if n == len(rows) else ""
            raise ValueError(
                f"{where}: {shown} line {first}: {len(fields)} field(s), where the header has "
                f"{len(header)} ({', '.join(header)}); column(s) {', '.join(map(repr, missing))} "
                f"missing{footer}"
            )
    if not tab and label in header:
        _check_merged_rows(rows, header, header.index(label), shown, where)
    columns = {h: [fields[i] if i < len(fields) else "" for _, _, fields in rows] for i, h in enumerate(header)}
    return Rows({h: _typed(v) for h, v in columns.items()})


def _csv_error(exc: csv.Error, text: str, shown: str, where: str, start: int, line: int) -> str:
    reason = str(exc)
    if "unexpected end of data" in reason or "EOF" in reason:
        opened = text.splitlines()[start - 1] if start - 1 < len(text.splitlines()) else ""
        return (
            f"{where}: {shown} line {start}: a quoted field opened on this line is never closed "
            f'({short(opened)}); close the quote, or double a \'"\' that is part of the text ("")'
        )
    where_line = f"line {line}" + (f" (in the row that starts on line {start})" if line != start else "")
    return (
        f"{where}: {shown} {where_line}: malformed CSV ({reason}): a '\"' that is part of a text must be doubled "
        f'("") inside a quoted field, or the field not start with \'"\''
    )


def _check_merged_rows(rows, header: list[str], label_index: int, shown: str, where: str) -> None:
    """A quoted field spanning lines whose inner lines read as rows (their label field holding a
    label the file uses) is rows merged by a stray quote."""
    labels = {fields[label_index] for first, last, fields in rows if first == last and label_index < len(fields)}
    for n, (first, last, fields) in enumerate(rows, start=1):
        if first == last:
            continue
        inner, offset = [], 0
        for value in fields:  # the lines inside each multi-line field (the fields before it on line `first`)
            for line in value.split("\n")[1:]:
                offset += 1
                parts = next(csv.reader([line]), [])
                if len(parts) == len(header) and parts[label_index] in labels:
                    inner.append((first + offset, line))
        if inner:
            shown_line = f"line {inner[0][0]}: {short(inner[0][1])}"
            raise ValueError(
                f"{where}: {shown} lines {first}-{last} were read as one row (data row {n}): a quote "
                f"opened on line {first} is closed only on line {last}, and {len(inner)} line(s) "
                f"inside it read as rows of their own ({shown_line}); double each '\"' that is part "
                f'of a text (""), or quote the whole text; tab-separated data (format: tsv) are '
                f"read without quoting"
            )


def _typed(values: list[str]) -> list:
    """A csv column as pandas types it: all integers -> int, all numbers -> float, '' -> None."""
    present = [v for v in values if v != ""]
    if present and all(_INT.fullmatch(v.strip()) for v in present):
        return [int(v) if v != "" else None for v in values]
    if present and all(_FLOAT.fullmatch(v.strip()) for v in present):
        return [float(v) if v != "" else None for v in values]
    return [v if v != "" else None for v in values]


# ----------------------------------------------------------------------------- json


def read_json(text: str, shown: str, where: str) -> Rows:
    """JSON Lines, a list of objects, or an object of equal-length columns."""
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"{where}: file {shown} is empty")
    whole = None
    if stripped[0] == "[":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(_json_error(exc, shown, where)) from None
    elif stripped[0] == "{":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            try:
                json.loads(stripped.splitlines()[0])  # a whole first line: JSON Lines
            except json.JSONDecodeError:
                raise ValueError(_json_error(exc, shown, where)) from None
    if isinstance(whole, list):
        return _from_objects([(i + 1, r) for i, r in enumerate(whole)], shown, where, "item")
    if isinstance(whole, dict):
        return _from_columns(whole, shown, where)
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{where}: {shown} line {number}: not valid JSON ({exc.msg} at column {exc.colno}: "
                f"{short(line)}); each line of a JSON Lines file is one object"
            ) from None
    return _from_objects(records, shown, where, "line")


def _json_error(exc: json.JSONDecodeError, shown: str, where: str) -> str:
    return (
        f"{where}: {shown} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); give rows as "
        f"JSON Lines (one object per line), a list of objects, or an object of equal-length columns"
    )


def _from_objects(records: list[tuple[int, Any]], shown: str, where: str, unit: str) -> Rows:
    if not records:
        raise ValueError(f"{where}: {shown} has no rows")
    names: dict[str, None] = {}
    for number, record in records:
        if not isinstance(record, dict):
            raise ValueError(
                f"{where}: {shown} {unit} {number} is {short(record)} (a {type(record).__name__}), not "
                f"an object of column: value"
            )
        names.update(dict.fromkeys(map(str, record)))
    return Rows({name: [record.get(name) for _, record in records] for name in names})


def _from_columns(whole: dict, shown: str, where: str) -> Rows:
    lengths = {k: len(v) for k, v in whole.items() if isinstance(v, list)}
    if not lengths:
        return _from_objects([(1, whole)], shown, where, "line")  # a JSON Lines file of one row
    if len(lengths) == len(whole) and len(set(lengths.values())) == 1:
        return Rows({str(k): list(v) for k, v in whole.items()})  # column-oriented: {"text": [...], ...}
    keys = ", ".join(map(repr, list(whole)[:8])) + (" ..." if len(whole) > 8 else "")
    what = (
        f"lists of different lengths ({', '.join(f'{k}: {n}' for k, n in list(lengths.items())[:8])})"
        if len(lengths) == len(whole)
        else "values that are not all lists"
    )
    raise ValueError(
        f"{where}: {shown} holds one JSON object with keys {keys} and {what}; give rows as JSON Lines "
        f"(one object per line), a list of objects, or an object of equal-length columns"
    )


def read_rows(
    path: Path, shown: str, where: str, fmt: str, encodings: Sequence[str], needed: Sequence[str], label: str
) -> Rows:
    text = decode(path, shown, where, encodings)
    if fmt == "json":
        return read_json(text, shown, where)
    return read_delimited(text, shown, where, fmt == "tsv", needed, label)
