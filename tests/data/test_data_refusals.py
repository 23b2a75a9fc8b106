"""Bad data, tried: broken, mis-encoded, mislabelled or misplaced data files and folders, each fed
to the data layer through `train` (or `load`, `download`), with the exact message the user sees
asserted. Data files are small pieces of the real ones, copied into tmp_path and then broken.

Set SIFTKIT_ROBUSTNESS_LOG=<file.jsonl> to have the tests write each (input, message) pair
they saw; docs/robustness.md was generated from that log.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import DATA_PIECES, TINY, robustness_log

import siftkit.run.training as training
from siftkit.data.loaders import load
from siftkit.data.registry import DataError, sha256_file
from siftkit.run.config import RunConfig
from siftkit.run.training import train

_log = robustness_log  # records what the user saw for docs/robustness.md


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("pristine")
    for rel, n in DATA_PIECES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        lines = (data_dir / rel).read_bytes().split(b"\n")[:n]
        (root / rel).write_bytes(b"\n".join(lines) + b"\n")
    return root


@pytest.fixture
def data(pristine, tmp_path):
    """A private copy of the small data folder, to break."""
    dst = tmp_path / "data"
    shutil.copytree(pristine, dst)
    return dst


def _train(output_dir, **changes):
    return train(RunConfig(**{**TINY, "output_dir": str(output_dir), **changes}), progress=False)


def _train_error(exc_type, output_dir, **changes) -> str:
    with pytest.raises(exc_type) as err:
        _train(output_dir, **changes)
    return str(err.value)


def _error(call, *args, kind=ValueError, **kwargs) -> str:
    with pytest.raises(kind) as err:
        call(*args, **kwargs)
    return str(err.value)


# ----------------------------------------------------------------------------- data files


def _data_error(data, tmp_path, rel, mutate, task="twitter_to_uci") -> tuple[Path, str]:
    path = data / rel
    mutate(path)
    msg = _train_error(DataError, tmp_path / "out", task=task, data_dir=str(data))
    assert not (tmp_path / "out" / "results.json").exists()
    return path, msg


def test_empty_data_file(data, tmp_path):
    path, msg = _data_error(data, tmp_path, "uci_sentiment/imdb_labelled.txt", lambda p: p.write_bytes(b""))
    assert msg == f"{path}: file is empty"
    _log("empty data file (0 bytes)", msg, data_dir=data)


def test_csv_with_only_a_header(data, tmp_path):
    path, msg = _data_error(data, tmp_path, "twitter_hate/train.csv", lambda p: p.write_bytes(b"id,label,tweet\n"))
    assert msg == f"{path}: no data rows after the header"
    _log("CSV with a header and no rows", msg, data_dir=data)


def test_csv_missing_a_column(data, tmp_path):
    def rename(p):
        p.write_bytes(p.read_bytes().replace(b"id,label,tweet", b"id,lbl,tweet", 1))

    path, msg = _data_error(data, tmp_path, "twitter_hate/train.csv", rename)
    assert msg == f"{path} line 1: CSV header ['id', 'lbl', 'tweet'] lacks column(s) label"
    _log("CSV header without a `label` column", msg, data_dir=data)


def test_csv_row_with_an_extra_field(data, tmp_path):
    def extra(p):
        lines = p.read_bytes().split(b"\n")
        lines[2] += b",extra"
        p.write_bytes(b"\n".join(lines))

    path, msg = _data_error(data, tmp_path, "twitter_hate/train.csv", extra)
    assert msg == f"{path} line 3: expected 3 CSV fields (id,label,tweet), got 4"
    _log("CSV row with an extra field", msg, data_dir=data)


def test_csv_unterminated_quote(data, tmp_path):
    def quote(p):
        p.write_bytes(p.read_bytes() + b'99999,0,"never closed\n')

    path, msg = _data_error(data, tmp_path, "twitter_hate/train.csv", quote)
    assert msg == f"{path} line 121: malformed CSV: unexpected end of data"
    _log("CSV field with an unterminated quote", msg, data_dir=data)


def test_tsv_line_without_a_tab(data, tmp_path):
    def untab(p):
        p.write_bytes(p.read_bytes().replace(b"\t", b" ", 1))

    path, msg = _data_error(data, tmp_path, "uci_sentiment/yelp_labelled.txt", untab)
    assert msg == f"{path} line 1: expected 2 tab-separated fields (sentence, label), got 1"
    _log("TSV line without its tab", msg, data_dir=data)


def test_blank_text(data, tmp_path):
    def blank(p):
        p.write_bytes(b"gj04\t1\t\t   \n" + p.read_bytes())

    path, msg = _data_error(data, tmp_path, "cola/in_domain_train.tsv", blank, task="cola")
    assert msg == f"{path} line 1: text is empty"
    _log("a row whose text is blank", msg, data_dir=data)


def test_missing_data_file(data, tmp_path):
    path, msg = _data_error(data, tmp_path, "cola/out_of_domain_dev.tsv", lambda p: p.unlink(), task="cola")
    assert msg == (
        f"{path}: file not found; fetch the data with `python -m siftkit download` "
        f"(or point data_dir / $SIFTKIT_DATA_DIR at a folder that has it)"
    )
    _log("a data file missing", msg, data_dir=data)


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "nowhere"
    msg = _train_error(DataError, tmp_path / "out", data_dir=str(missing))
    assert msg == (
        f"data folder {missing} (from the data_dir argument) does not exist or is not a folder; "
        f"pass data_dir=..., set SIFTKIT_DATA_DIR, or fetch the data with `python -m siftkit download`"
    )
    _log("data_dir that does not exist", msg, **{"no/such/folder": missing})


def test_latin1_file(data, tmp_path):
    rel = "uci_sentiment/imdb_labelled.txt"
    offset = len((data / rel).read_bytes()) + len(b"Caf")
    path, msg = _data_error(
        data, tmp_path, rel, lambda p: p.write_bytes(p.read_bytes() + "Café was fine.\t1\n".encode("latin-1"))
    )
    assert msg == f"{path} line 31: not valid UTF-8 (byte b'\\xe9' at offset {offset}: invalid continuation byte)"
    _log("wrong encoding: a Latin-1 line", msg, data_dir=data)


def test_utf16_file(data, tmp_path):
    def utf16(p):
        p.write_bytes(p.read_text(encoding="utf-8").encode("utf-16"))

    path, msg = _data_error(data, tmp_path, "cola/in_domain_dev.tsv", utf16, task="cola")
    assert msg == f"{path} line 1: not valid UTF-8 (byte b'\\xff' at offset 0: invalid start byte)"
    _log("wrong encoding: the file saved as UTF-16", msg, data_dir=data)


def test_utf8_byte_order_mark_is_accepted(data):
    from siftkit.data.loaders import load

    path = data / "cola" / "in_domain_dev.tsv"
    plain = load("cola", data)["in_domain_dev"]["text"]
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load("cola", data)["in_domain_dev"]["text"] == plain
    _log("UTF-8 with a byte-order mark", "(accepted: the mark is dropped, the data are the same)")


@pytest.mark.parametrize(
    "rel, old, new, task, line, shown",
    [
        ("uci_sentiment/amazon_cells_labelled.txt", b"\t0\n", b"\t2\n", "twitter_to_uci", None, "'2'"),
        ("twitter_hate/train.csv", b"\n1,0,", b"\n1,-1,", "twitter_to_uci", 2, "'-1'"),
        ("cola/in_domain_train.tsv", b"\t1\t", b"\t1.0\t", "cola", 1, "'1.0'"),
    ],
    ids=["uci-2", "twitter-minus1", "cola-1.0"],
)
def test_label_outside_0_1(data, tmp_path, rel, old, new, task, line, shown):
    if line is None:  # the first line whose label is 0
        line = (data / rel).read_bytes().split(b"\n").index(
            next(x for x in (data / rel).read_bytes().split(b"\n") if x.endswith(b"\t0"))
        ) + 1
    path, msg = _data_error(
        data, tmp_path, rel, lambda p: p.write_bytes(p.read_bytes().replace(old, new, 1)), task=task
    )
    assert msg == f"{path} line {line}: label must be 0 or 1, got {shown}"
    _log(f"label {shown} in {rel.split('/')[0]}", msg, data_dir=data)


# ----------------------------------------------------------------------------- data folders, the download, more files


def test_download_into_a_file(capsys, tmp_path):
    from siftkit.data.download import main as download_main

    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert download_main(["--data-dir", str(target)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: cannot use {target} as the data folder: it is a file, not a folder; pass --data-dir "
        f"a folder (it is created if missing)\n"
    )
    assert target.read_text() == "keep me"
    robustness_log("`download --data-dir notes.txt` (a file)", err.strip(), **{"notes.txt": target})
    assert download_main(["--data-dir", str(target / "sub")]) == 1
    assert capsys.readouterr().err == (
        f"error: cannot use {target / 'sub'} as the data folder: Not a directory; "
        f"pass --data-dir a folder (it is created if missing)\n"
    )


def test_data_dir_one_level_too_deep(data, tmp_path):
    """`--data_dir data/cola` was told to download the data it already had."""
    with pytest.raises(DataError) as err:
        _train(tmp_path / "out", task="cola", data_dir=str(data / "cola"))
    msg = str(err.value)
    assert msg == (
        f"data folder {data / 'cola'} holds in_domain_train.tsv itself: it looks like the cola dataset "
        f"folder, one level too deep; set data_dir (or $SIFTKIT_DATA_DIR) to the folder above it, {data}"
    )
    robustness_log("data_dir one level too deep (`data_dir/cola`)", msg, data_dir=data)
    with pytest.raises(DataError, match=r"looks like the uci_sentiment dataset folder"):
        load("cola", data / "uci_sentiment")


@pytest.mark.parametrize(
    "name, rel",
    [
        ("cola", "cola/in_domain_train.tsv"),
        ("twitter_hate", "twitter_hate/train.csv"),
        ("uci_sentiment", "uci_sentiment/imdb_labelled.txt"),
    ],
)
def test_windows_line_endings_one_rule_for_all(data, name, rel):
    """CoLA and Twitter kept a '\\r' in their texts while UCI refused the file: now all three
    read CRLF as a line ending, and the data are those of the original file."""
    if name == "twitter_hate":  # a quoted tweet that spans two lines: its line break is one too
        (data / rel).write_bytes((data / rel).read_bytes() + b'99999,0,"two\nlines"\n')
    before = load(name, data)
    (data / rel).write_bytes((data / rel).read_bytes().replace(b"\n", b"\r\n"))
    after = load(name, data)
    for split in before:
        assert after[split].to_dict() == before[split].to_dict()
        assert not any("\r" in text for text in after[split]["text"])
    robustness_log(
        f"Windows (CRLF) line endings in {rel.split('/')[0]}",
        "(accepted: read as line endings; the same texts and labels as the original file)",
    )


def test_edited_data_files_are_said_once_and_recorded(tmp_path, data):
    imdb = data / "uci_sentiment" / "imdb_labelled.txt"
    imdb.write_bytes(b"".join(imdb.read_bytes().splitlines(keepends=True)[:15]))
    with pytest.warns(training.DataWarning) as said:
        record = _train(tmp_path / "R", data_dir=str(data))
    texts = [str(w.message) for w in said if "imdb" in str(w.message)]
    assert len(texts) == 1 and texts[0].startswith(f"{imdb} differs from the published file (")
    assert "published: 85285 bytes, aef2e49e3da2...); the run uses it as it is" in texts[0]
    assert record["meta"]["data_files"]["uci_sentiment/imdb_labelled.txt"] == sha256_file(imdb)
    assert record["meta"]["data_rows"]["uci_sentiment/pool"] == 75
    robustness_log(
        "a data folder whose imdb_labelled.txt holds half its lines",
        texts[0].split(" (")[0]
        + " (… bytes, sha256 …; published: 85285 bytes, aef2e49e3da2...); the run uses it as it is, and "
        "results.json records its sha256 (meta.data_files) and the rows read (meta.data_rows)",
        data_dir=data,
    )


def test_empty_data_dir_variable_is_refused_like_an_empty_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SIFTKIT_DATA_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    msg = _error(load, "twitter_hate", kind=DataError)
    assert msg == (
        "$SIFTKIT_DATA_DIR is set but empty (''); name the data folder in it, or unset it "
        "(`unset SIFTKIT_DATA_DIR`) for the default"
    )
    assert not (tmp_path / "cache").exists()  # was: an empty cache folder left behind
    robustness_log("`SIFTKIT_DATA_DIR=` (set, empty)", msg)
    msg = _error(load, "cola", " data", kind=DataError)
    assert msg.startswith("data folder ' data' (from the data_dir argument) does not exist")
    robustness_log("data_dir ' data' (a leading space)", msg)


def test_twitter_csv_with_two_label_columns(data):
    csv = data / "twitter_hate" / "train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0] + ",label"] + [f"{line},1" for line in lines[1:]]) + "\n")
    msg = _error(load, "twitter_hate", data, kind=DataError)
    assert msg == f"{csv} line 1: CSV header ['id', 'label', 'tweet', 'label'] names column(s) label more than once"
    robustness_log("a Twitter CSV with two `label` columns", msg, data_dir=data)


def test_blank_data_dir_variable(monkeypatch):
    monkeypatch.setenv("SIFTKIT_DATA_DIR", " ")
    msg = _error(load, "cola", kind=DataError)
    assert msg == (
        "$SIFTKIT_DATA_DIR is set but empty (' '); name the data folder in it, or unset it "
        "(`unset SIFTKIT_DATA_DIR`) for the default"
    )
    robustness_log("`SIFTKIT_DATA_DIR=' '` (only a space)", msg)


def test_twitter_csv_with_two_id_columns(data):
    csv = data / "twitter_hate" / "train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(["id," + lines[0]] + [f"0,{line}" for line in lines[1:]]) + "\n")
    msg = _error(load, "twitter_hate", data, kind=DataError)
    assert msg == f"{csv} line 1: CSV header ['id', 'id', 'label', 'tweet'] names column(s) id more than once"
    robustness_log("a Twitter CSV with two `id` columns", msg, data_dir=data)
