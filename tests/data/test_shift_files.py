"""A shift spec's own files, as real corpora come: other encodings, stray quotes, footers,
repeated header names, broken JSON lines, invisible texts, one-class validation sets, an
evaluation set that is the training data under another name, and metric names two sets share.

Every refusal names the spec key, the file, the line (or data row) and the way out; each is a
docs/robustness.md row (logged through `robustness_log`).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from helpers import robustness_log

from siftkit.data.shift_data import ShiftDataWarning
from siftkit.run.config import RunConfig
from siftkit.run.protocols import build_stages

TINY = dict(
    model_name="random:bert",
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    learning_rate=1e-3,
    logging_steps=1,
    max_length=32,
    cpu=True,
)
POS = [
    "a lovely film",
    "great acting and a fine story",
    "I enjoyed every minute",
    "wonderful truly",
    "a delight from start to end",
    "superb",
    "a fine cast",
    "moving and warm",
]
NEG = [
    "a dull film",
    "the plot made no sense",
    "I want my money back",
    "awful truly",
    "boring from start to end",
    "dreadful",
    "a waste of time",
    "flat and cold",
]
LABEL_MAP = {"0": "negative", "1": "positive"}


def _rows() -> list[tuple[str, int]]:
    return [(t, 1) for t in POS] + [(t, 0) for t in NEG]


def _spec(train: Path, evaluation: Path | None = None, *, fmt: str | None = None, validation=None, **data) -> dict:
    def source(f: Path) -> dict:
        d = {"files": str(f), "text": "review", "label": "stars", "label_map": dict(LABEL_MAP), **data}
        if fmt:
            d["format"] = fmt
        return d

    stage = {"name": "reviews", "data": source(train)}
    if validation is not None:
        stage["validation"] = validation
    return {
        "name": "files",
        "labels": ["negative", "positive"],
        "stages": [stage],
        "evals": [{"name": "tweets", "data": source(evaluation or train)}],
    }


def _write_delimited(path: Path, rows, sep: str = ",", header: str = "review,stars", encoding="utf-8") -> Path:
    lines = [header.replace(",", sep)] + [f"{t}{sep}{y}" for t, y in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def _eval_file(tmp_path: Path) -> Path:
    return _write_delimited(tmp_path / "eval.csv", [("loved it", 1), ("hated it", 0), ("so good", 1), ("so bad", 0)])


def _stages(spec: dict, **kw):
    return build_stages(RunConfig(task="shift", shift=spec, **{**TINY, **kw}))


def _refused(spec: dict, what: str, tmp_path: Path, **kw) -> str:
    with pytest.raises(ValueError) as err:
        _stages(spec, **kw)
    message = str(err.value)
    assert "\n" not in message and len(message) < 800, message
    robustness_log(what, message, tmp=tmp_path)
    return message


# ----------------------------------------------------------------------------- wrong results before


def test_two_evaluation_sets_writing_one_metric_name_are_refused(tmp_path):
    """An eval `tw` after [reviews, tweets2] writes tw_after_reviews_*; an eval named
    `tw_after_reviews` would write the same keys and one score would be lost."""
    data = _write_delimited(tmp_path / "r.csv", _rows())
    spec = _spec(data, _eval_file(tmp_path))
    spec["stages"].append({"name": "tweets2", "data": copy.deepcopy(spec["stages"][0]["data"])})
    spec["evals"] = [
        {"name": "tw", "data": copy.deepcopy(spec["evals"][0]["data"]), "after": ["reviews", "tweets2"]},
        {"name": "tw_after_reviews", "data": copy.deepcopy(spec["evals"][0]["data"])},
    ]
    with pytest.raises(ValueError) as err:
        RunConfig(task="shift", shift=spec, **TINY)
    assert str(err.value) == (
        "shift.evals: shift.evals[0] ('tw', after stage 'reviews') and shift.evals[1] "
        "('tw_after_reviews') would both write the metrics tw_after_reviews_*, so one score "
        "would overwrite the other; rename one of the evaluation sets"
    )
    robustness_log(
        "an evaluation set `tw` with `after: [reviews, tweets2]` and a second one named `tw_after_reviews`",
        str(err.value),
    )


def test_an_evaluation_set_named_like_a_validation_set_is_refused(tmp_path):
    data = _write_delimited(tmp_path / "r.csv", _rows())
    spec = _spec(data, _eval_file(tmp_path), validation={"fraction": 0.25})
    spec["evals"][0]["name"] = "reviews_val"
    with pytest.raises(ValueError) as err:
        RunConfig(task="shift", shift=spec, **TINY)
    assert str(err.value) == (
        "shift.evals: stage 'reviews''s validation set and shift.evals[0] ('reviews_val') would "
        "both write the metrics reviews_val_*, so one score would overwrite the other; rename "
        "one of the evaluation sets"
    )


def _quote_file(path: Path, sep: str) -> Path:
    """16 data lines: line 3's text starts with '"', line 9's holds a stray '"' before the separator."""
    rows = _rows()
    lines = ["review" + sep + "stars"]
    for i, (t, y) in enumerate(rows):
        if i == 1:
            t = '"Great" acting and a fine story'
        if i == 7:
            t = 'moving and warm, 5"'
        lines.append(f"{t}{sep}{y}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_tab_separated_text_starting_with_a_quote_does_not_merge_rows(tmp_path):
    data = _quote_file(tmp_path / "r.tsv", "\t")
    (stage,) = _stages(_spec(data, _eval_file(tmp_path)))
    assert len(stage.train) == 16
    assert stage.train["text"][1] == '"Great" acting and a fine story'
    assert stage.train["text"][7] == 'moving and warm, 5"'
    assert list(stage.train["label"]) == [1] * 8 + [0] * 8
    robustness_log(
        'a tab-separated file where one text starts with `"` and a later one holds a stray `"`',
        "accepted: tab-separated files are read without quoting, as GLUE's readers do; 16 data lines, "
        "16 rows, each with its own label",
    )


def test_a_comma_separated_file_whose_stray_quote_merges_rows_is_refused(tmp_path):
    rows = _rows()
    lines = ["review,stars"] + [f"{t},{y}" for t, y in rows]
    lines[2] = '"Great acting and a fine story,1'  # opens a quote it never closes on its line
    lines[8] = 'moving and warm 5",1'  # a stray quote, right before the separator
    data = tmp_path / "r.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = _refused(
        _spec(data, _eval_file(tmp_path)),
        "a comma-separated file where one text opens a quote "
        'and a later one holds a stray `"` before the comma (rows merged)',
        tmp_path,
    )
    assert message.startswith(
        f"shift.stages[0].data: {data} lines 3-9 were read as one row (data row 2): a quote "
        f"opened on line 3 is closed only on line 9, and 5 line(s) inside it read as rows of "
        f"their own (line 4: 'I enjoyed every minute,1')"
    )


def test_a_comma_separated_stray_quote_inside_a_text_is_named(tmp_path):
    data = _quote_file(tmp_path / "r.csv", ",")
    message = _refused(
        _spec(data, _eval_file(tmp_path)),
        'a comma-separated text `"Great" acting and a fine story` (a quote followed by more text)',
        tmp_path,
    )
    assert message.startswith(f"shift.stages[0].data: {data} line 3: malformed CSV")
    assert "must be doubled" in message


def test_a_legitimate_multi_line_quoted_text_is_read(tmp_path):
    rows = _rows()
    lines = ["review,stars"] + [f"{t},{y}" for t, y in rows]
    lines[2] = '"Great acting,\nand a fine story",1'
    data = tmp_path / "r.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (stage,) = _stages(_spec(data, _eval_file(tmp_path)))
    assert len(stage.train) == 16 and stage.train["text"][1] == "Great acting,\nand a fine story"


def _latin1_rows() -> list[tuple[str, int]]:
    rows = _rows()
    rows[0] = ("a lovely café film", 1)
    rows[9] = ("the plot made no sense — none", 0)  # an em dash: cp1252 0x97, not in Latin-1
    return rows


def test_a_cp1252_file_names_the_line_and_the_encoding_key(tmp_path):
    data = _write_delimited(tmp_path / "r.csv", _latin1_rows(), encoding="cp1252")
    message = _refused(_spec(data, _eval_file(tmp_path)), "a spec's csv saved as cp1252 (Windows)", tmp_path)
    assert message == (
        f"shift.stages[0].data: {data} line 2 is not valid utf-8 (byte b'\\xe9' at column 13: "
        f"invalid continuation byte); name the file's encoding with shift.stages[0].data.encoding "
        f"(e.g. encoding: cp1252 for Windows text, or latin-1), or for a file that mixes encodings a "
        f"list tried line by line, e.g. encoding: [utf-8, cp1252]"
    )


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_the_spec_names_the_encoding(tmp_path, encoding):
    rows = _latin1_rows()
    if encoding == "latin-1":
        rows[9] = ("the plot made no sense", 0)
    data = _write_delimited(tmp_path / "r.csv", rows, encoding=encoding)
    (stage,) = _stages(_spec(data, _eval_file(tmp_path), encoding=encoding))
    assert stage.train["text"][0] == "a lovely café film" and stage.train["text"][9] == rows[9][0]


def test_a_file_of_mixed_encodings_is_read_line_by_line(tmp_path):
    rows = _latin1_rows()
    lines = ["review,stars"] + [f"{t},{y}" for t, y in rows]
    raw = b"\n".join(line.encode("utf-8") if i != 10 else line.encode("cp1252") for i, line in enumerate(lines))
    data = tmp_path / "r.csv"
    data.write_bytes(raw + b"\n")
    _refused(_spec(data, _eval_file(tmp_path)), "a csv mixing UTF-8 and cp1252 lines", tmp_path)
    (stage,) = _stages(_spec(data, _eval_file(tmp_path), encoding=["utf-8", "cp1252"]))
    assert stage.train["text"][0] == "a lovely café film"  # UTF-8 line
    assert stage.train["text"][9] == "the plot made no sense — none"  # cp1252 line
    robustness_log(
        "a csv mixing UTF-8 and cp1252 lines with `encoding: [utf-8, cp1252]`",
        "accepted: each line is decoded in the first encoding that fits",
    )


def test_an_unknown_encoding_is_named(tmp_path):
    data = _write_delimited(tmp_path / "r.csv", _rows())
    with pytest.raises(ValueError) as err:
        RunConfig(task="shift", shift=_spec(data, encoding="latin-9x"), **TINY)
    assert str(err.value) == (
        "shift.stages[0].data.encoding: unknown encoding 'latin-9x'; e.g. utf-8, cp1252, latin-1, utf-16"
    )
    robustness_log("`encoding: latin-9x`", str(err.value))


def test_max_length_that_leaves_no_room_for_text(tmp_path):
    from siftkit.run.training import train

    data = _write_delimited(tmp_path / "r.csv", _rows())
    for max_length in (1, 2):
        cfg = RunConfig(
            task="shift",
            shift=_spec(data, _eval_file(tmp_path)),
            num_train_epochs=1,
            output_dir=str(tmp_path / f"run{max_length}"),
            **{**TINY, "max_length": max_length},
        )
        with pytest.raises(ValueError) as err:
            train(cfg, progress=False)
        assert str(err.value) == (
            f"max_length={max_length} leaves no room for text: the tokenizer of model "
            f"'random:bert' adds 2 special tokens to each text ([CLS] [SEP]), and texts are "
            f"truncated to max_length tokens in all; use max_length >= 3 (e.g. 128)"
        )
        assert not (tmp_path / f"run{max_length}").exists()
        robustness_log(f"`--max_length {max_length}`", str(err.value))
    record = train(
        RunConfig(
            task="shift",
            shift=_spec(data, _eval_file(tmp_path)),
            num_train_epochs=1,
            output_dir=str(tmp_path / "run3"),
            **{**TINY, "max_length": 3},
        ),
        progress=False,
    )
    assert record["config"]["max_length"] == 3


# ----------------------------------------------------------------------------- unclear failures before


def test_a_malformed_jsonl_line_is_named(tmp_path):
    data = tmp_path / "r.jsonl"
    lines = [json.dumps({"review": t, "stars": y}) for t, y in _rows()]
    lines[4] = '{"review": "boring", "stars": 0'
    data.write_text("\n".join(lines) + "\n")
    message = _refused(_spec(data, _eval_file(tmp_path)), "a malformed JSON Lines line", tmp_path)
    assert message == (
        f"shift.stages[0].data: {data} line 5: not valid JSON (Expecting ',' delimiter at column 32: "
        f'\'{{"review": "boring", "stars": 0\'); each line of a JSON Lines file is one object'
    )


def test_an_unclosed_quote_is_named(tmp_path):
    rows = _rows()
    lines = ["review,stars"] + [f"{t},{y}" for t, y in rows]
    lines[-1] = '"flat and cold,0'
    data = tmp_path / "r.csv"
    data.write_text("\n".join(lines) + "\n")
    message = _refused(
        _spec(data, _eval_file(tmp_path)), "a csv whose last text opens a quote it never closes", tmp_path
    )
    assert message == (
        f"shift.stages[0].data: {data} line 17: a quoted field opened on this line is never closed "
        f"('\"flat and cold,0'); close the quote, or double a '\"' that is part of the text (\"\")"
    )


def test_a_csv_footer_is_named(tmp_path):
    data = _write_delimited(tmp_path / "r.csv", _rows())
    data.write_text(data.read_text() + "16 reviews in all\n")
    message = _refused(_spec(data, _eval_file(tmp_path)), "a csv with a footer line (`16 reviews in all`)", tmp_path)
    assert message == (
        f"shift.stages[0].data: {data} line 18: 1 field(s), where the header has 2 (review, stars); "
        f"column(s) 'stars' missing at the end of the file: a footer or a note? Remove it"
    )


def test_a_duplicated_header_column_is_named(tmp_path):
    data = _write_delimited(tmp_path / "r.csv", [(t, f"{y},x") for t, y in _rows()], header="review,stars,review")
    message = _refused(_spec(data, _eval_file(tmp_path)), "a csv header naming `review` twice", tmp_path)
    assert message == (
        f"shift.stages[0].data: {data} line 1: the header names column(s) 'review' more than once "
        f"(review, stars, review); give each column its own name"
    )


def test_a_text_of_only_a_zero_width_space_is_refused(tmp_path):
    rows = _rows()
    rows[3] = ("\u200b", 1)
    data = _write_delimited(tmp_path / "r.csv", rows)
    message = _refused(_spec(data, _eval_file(tmp_path)), "a text made only of a zero-width space (U+200B)", tmp_path)
    assert message == (
        f"shift.stages[0].data: {data}, column 'review', data row 4 holds no visible character "
        f"('\\u200b': U+200B ZERO WIDTH SPACE); every text must be a non-empty string"
    )


def test_a_column_oriented_json_is_read_and_its_errors_stay_short(tmp_path):
    rows = _rows()
    data = tmp_path / "r.json"
    data.write_text(json.dumps({"review": [t for t, _ in rows], "stars": [y for _, y in rows]}))
    (stage,) = _stages(_spec(data, _eval_file(tmp_path)))
    assert list(stage.train["text"]) == [t for t, _ in rows]
    robustness_log(
        'a column-oriented JSON (`{"review": [...], "stars": [...]}`)',
        "accepted: read as one row per position of the columns",
    )
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"review": [["nested", "x" * 20]] * 100_000, "stars": [1] * 100_000}))
    message = _refused(
        _spec(big, _eval_file(tmp_path)), "a column-oriented JSON of 100k rows whose texts are lists", tmp_path
    )
    assert len(message) < 400
    assert message.startswith(f"shift.stages[0].data: {big}, column 'review', data row 1 is ['nested', ")


def test_a_folder_given_as_a_file_is_named(tmp_path):
    (tmp_path / "corpus").mkdir()
    message = _refused(
        _spec(tmp_path / "corpus", _eval_file(tmp_path), fmt="csv"), "a folder given as a data file", tmp_path
    )
    assert message == (
        f"shift.stages[0].data: {tmp_path / 'corpus'} is a folder, not a file; name the data file(s) "
        f"in it, e.g. {tmp_path / 'corpus' / 'train.csv'}"
    )


def test_a_symlink_loop_is_named(tmp_path):
    loop = tmp_path / "loop.csv"
    os.symlink(loop, loop)
    message = _refused(_spec(loop, _eval_file(tmp_path)), "a data file that is a symbolic link to itself", tmp_path)
    assert message == (
        f"shift.stages[0].data: file {loop} cannot be opened: Too many levels of symbolic links (a "
        f"symbolic link that leads back to itself)"
    )


def test_a_one_class_validation_set_is_refused(tmp_path):
    data = _write_delimited(tmp_path / "r.csv", _rows())
    val = _write_delimited(tmp_path / "val.csv", [(t, 1) for t in POS[:3]])
    spec = _spec(
        data,
        _eval_file(tmp_path),
        validation={"files": str(val), "text": "review", "label": "stars", "label_map": dict(LABEL_MAP)},
    )
    message = _refused(spec, "a validation file holding one class", tmp_path)
    assert message == (
        f"shift.stages[0].validation: the validation set of stage 'reviews' ({val}: 3 rows) holds "
        f"only class 'positive'; its MCC is undefined (it would read 0.0) and a grid or early stopping "
        f"would choose on it: hold out more rows, or give a validation set with at least two classes"
    )


def test_a_validation_fraction_leaving_one_row_is_refused(tmp_path):
    data = _write_delimited(tmp_path / "r.csv", _rows())
    message = _refused(
        _spec(data, _eval_file(tmp_path), validation={"fraction": 0.05}),
        "validation fraction 0.05 of 16 rows (one row held out)",
        tmp_path,
    )
    assert message.startswith(
        "shift.stages[0].validation: the validation set of stage 'reviews' (fraction 0.05 of "
        "16 training rows: 1 row) holds only class "
    )


@pytest.mark.parametrize("how", ["copy", "where"])
def test_the_training_data_under_another_name_is_flagged(tmp_path, how):
    rows = [(t, y, "a" if i % 2 else "b") for i, (t, y) in enumerate(_rows())]
    data = tmp_path / "r.csv"
    data.write_text("review,stars,source\n" + "".join(f"{t},{y},{s}\n" for t, y, s in rows))
    if how == "copy":
        other = tmp_path / "copy_of_r.csv"
        other.write_bytes(data.read_bytes())
        spec = _spec(data, other)
    else:
        spec = _spec(data)
        spec["evals"][0]["data"]["where"] = {"source": "a"}
    with pytest.warns(ShiftDataWarning) as caught:
        _stages(spec)
    message = str(caught[0].message)
    n = 16 if how == "copy" else 8
    described = str(tmp_path / "copy_of_r.csv") if how == "copy" else str(data)
    assert message == (
        f"shift: evaluation set 'tweets' ({described}) shares {n} of its {n} texts with the training "
        f"data of stage 'reviews' ({data}); that is not out of domain"
    )
    robustness_log(
        "a byte-identical copy of the training file as an evaluation set (a warning)"
        if how == "copy"
        else "the training file through `where: {source: a}` as an evaluation set (a warning)",
        message,
        tmp=tmp_path,
    )


def test_a_kit_text_of_only_a_zero_width_space_is_refused(tmp_path, data_dir):
    from helpers import copy_data_lines

    from siftkit.data.loaders import load
    from siftkit.data.registry import DataError

    rel = "uci_sentiment/yelp_labelled.txt"
    copy_data_lines(
        data_dir,
        tmp_path,
        {"uci_sentiment/amazon_cells_labelled.txt": 20, "uci_sentiment/imdb_labelled.txt": 20, rel: 20},
    )
    path = tmp_path / rel
    path.write_bytes("\u200b\u200b\t1\n".encode() + path.read_bytes())
    with pytest.raises(DataError) as err:
        load("uci_sentiment", str(tmp_path))
    assert str(err.value) == (
        f"{path} line 1: text holds no visible character ('\\u200b\\u200b': U+200B ZERO WIDTH SPACE)"
    )
    robustness_log("a uci_sentiment line whose text is two zero-width spaces", str(err.value), **{"data_dir": tmp_path})
