"""siftkit.data.loaders: real-file counts and quirks, malformed-file errors, data-folder lookup."""

from collections import Counter
from pathlib import Path

import pytest

from siftkit.data.folder import resolve_data_dir
from siftkit.data.loaders import load
from siftkit.data.registry import DATASETS, DataError

# ----------------------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def cola(data_dir):
    return load("cola", data_dir)


@pytest.fixture(scope="module")
def twitter(data_dir):
    return load("twitter_hate", data_dir)


@pytest.fixture(scope="module")
def uci(data_dir):
    return load("uci_sentiment", data_dir)


def test_cola_rows_and_labels(cola):
    assert {k: len(v) for k, v in cola.items()} == {"train": 8551, "in_domain_dev": 527, "out_of_domain_dev": 516}
    assert Counter(cola["train"]["label"]) == {0: 2528, 1: 6023}
    assert Counter(cola["in_domain_dev"]["label"]) == {0: 162, 1: 365}
    assert Counter(cola["out_of_domain_dev"]["label"]) == {0: 162, 1: 354}
    assert set(cola["train"].column_names) == {"text", "label", "source"}
    assert len(set(cola["train"]["source"])) == 17
    assert len(set(cola["out_of_domain_dev"]["source"])) == 6
    # the row after which out_of_domain_dev.tsv has no final newline is still read whole
    assert cola["out_of_domain_dev"][-1]["source"] == "w_80"
    assert 'Susan whispered "Shut up".' in cola["train"]["text"]


@pytest.mark.slow
def test_twitter_rows_labels_and_whitespace(twitter):
    train = twitter["train"]
    assert list(twitter) == ["train"]
    assert len(train) == 31962
    assert Counter(train["label"]) == {0: 29720, 1: 2242}
    assert list(train["id"]) == list(range(1, 31963))
    first = train[0]
    assert first["text"] == (
        " @user when a father is dysfunctional and is so selfish he drags his kids into his dysfunction.   #run"
    )
    assert sum(t != t.lstrip() for t in train["text"]) == 5589
    assert sum(t != t.rstrip() for t in train["text"]) == 23992
    # U+0085 inside tweets does not split rows
    assert any("\x85" in t for t in train["text"])


def test_uci_rows_labels_and_quotes(uci):
    pool = uci["pool"]
    assert list(uci) == ["pool"]
    assert len(pool) == 3000
    assert Counter(pool["label"]) == {0: 1500, 1: 1500}
    assert list(pool["source"]) == ["amazon"] * 1000 + ["imdb"] * 1000 + ["yelp"] * 1000
    for src in ("amazon", "imdb", "yelp"):
        labels = [lab for lab, s in zip(pool["label"], pool["source"]) if s == src]
        assert Counter(labels) == {0: 500, 1: 500}, src
    imdb = [t for t, s in zip(pool["text"], pool["source"]) if s == "imdb"]
    quoted = 'This is a very "right on case" movie that delivers everything almost right in your face.  '
    assert quoted in imdb  # own row, trailing two spaces kept
    assert sum('"' in t for t in imdb) == 43
    assert all(t.endswith("  ") for t in imdb)
    assert any("\x85" in t for t in imdb)


@pytest.mark.slow
def test_no_empty_texts(cola, twitter, uci):
    for dd in (cola, twitter, uci):
        for split in dd.values():
            assert all(t.strip() for t in split["text"])
            assert set(split["label"]) == {0, 1}


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="cola.*twitter_hate.*uci_sentiment"):
        load("sst2", tmp_path)


# ------------------------------------------------------------------------ malformed files

GOOD = {
    "cola/in_domain_train.tsv": "a\t1\t\tGood one.\nb\t0\t*\tBad one.\nc\t1\t\tThird.\n",
    "cola/in_domain_dev.tsv": "a\t1\t\tDev one.\nb\t0\t*\tDev two.\nc\t1\t\tDev three.\n",
    "cola/out_of_domain_dev.tsv": "a\t1\t\tOut one.\nb\t0\t*\tOut two.",
    "twitter_hate/train.csv": 'id,label,tweet\n1,0, lead\n2,1,"a, ""b"""\n3,0,x\n',
    "uci_sentiment/amazon_cells_labelled.txt": "Good.\t1\nBad.\t0\nOk.\t1\n",
    "uci_sentiment/imdb_labelled.txt": 'Fine "x"  \t1\nMeh \x85 no.  \t0\nOk.  \t1\n',
    "uci_sentiment/yelp_labelled.txt": "Yum.\t1\nYuck.\t0\nOk.\t1\n",
}


@pytest.fixture
def fake_dir(tmp_path):
    for rel, text in GOOD.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode("utf-8"))
    return tmp_path


def test_fake_layout_loads(fake_dir):
    assert len(load("cola", fake_dir)["out_of_domain_dev"]) == 2
    tw = load("twitter_hate", fake_dir)["train"]
    assert list(tw["text"]) == [" lead", 'a, "b"', "x"] and list(tw["id"]) == [1, 2, 3]
    pool = load("uci_sentiment", fake_dir)["pool"]
    assert len(pool) == 9 and pool["text"][4] == "Meh \x85 no.  "


def _replace_line(path: Path, line_no: int, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line_no - 1] = new
    path.write_bytes(b"\n".join(lines))


# (dataset, file, 1-based line, replacement bytes, expected message fragment)
BAD_LINES = [
    ("cola", "cola/in_domain_dev.tsv", 3, b"c\t1\tThird.", "expected 4"),
    ("cola", "cola/in_domain_train.tsv", 2, b"b\t2\t*\tBad one.", "got '2'"),
    ("cola", "cola/in_domain_train.tsv", 2, b"b\tx\t*\tBad one.", "got 'x'"),
    ("cola", "cola/out_of_domain_dev.tsv", 2, b"b\t0\t*\t  ", "empty"),
    ("cola", "cola/in_domain_train.tsv", 3, b"c\t1\t\tTh\xff\xfeird.", "UTF-8"),
    ("twitter_hate", "twitter_hate/train.csv", 3, b"2,1", "expected 3"),
    ("twitter_hate", "twitter_hate/train.csv", 4, b"3,2,x", "got '2'"),
    ("twitter_hate", "twitter_hate/train.csv", 4, b"3,x,x", "got 'x'"),
    ("twitter_hate", "twitter_hate/train.csv", 2, b"one,0, lead", "id must be an integer"),
    ("twitter_hate", "twitter_hate/train.csv", 3, b'2,1,"a\xff\xfe"', "UTF-8"),
    ("uci_sentiment", "uci_sentiment/imdb_labelled.txt", 2, b"Meh.  \t2", "got '2'"),
    ("uci_sentiment", "uci_sentiment/yelp_labelled.txt", 2, b"Yuck.\tx", "got 'x'"),
    ("uci_sentiment", "uci_sentiment/amazon_cells_labelled.txt", 3, b"Ok.", "expected 2"),
    ("uci_sentiment", "uci_sentiment/yelp_labelled.txt", 3, b"Ok.\t1\t0", "expected 2"),
    ("uci_sentiment", "uci_sentiment/imdb_labelled.txt", 3, b"Ok. \xff\xfe\t1", "UTF-8"),
    ("uci_sentiment", "uci_sentiment/amazon_cells_labelled.txt", 1, b"\t1", "empty"),
]


@pytest.mark.parametrize("name,rel,line,new,fragment", BAD_LINES)
def test_bad_line_names_file_and_line(fake_dir, name, rel, line, new, fragment):
    _replace_line(fake_dir / rel, line, new)
    with pytest.raises(DataError) as err:
        load(name, fake_dir)
    msg = str(err.value)
    assert str(fake_dir / rel) in msg
    assert f" line {line}:" in msg
    assert fragment in msg


@pytest.mark.parametrize(
    "name,rel",
    [
        ("cola", "cola/in_domain_dev.tsv"),
        ("twitter_hate", "twitter_hate/train.csv"),
        ("uci_sentiment", "uci_sentiment/yelp_labelled.txt"),
    ],
)
def test_empty_and_missing_file(fake_dir, name, rel):
    path = fake_dir / rel
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as err:
        load(name, fake_dir)
    assert str(path) in str(err.value)
    path.unlink()
    with pytest.raises(DataError, match="not found") as err:
        load(name, fake_dir)
    assert str(path) in str(err.value) and "siftkit download" in str(err.value)


def test_twitter_header_problems(fake_dir):
    path = fake_dir / "twitter_hate/train.csv"
    path.write_bytes(b"id,class,tweet\n1,0,x\n")
    with pytest.raises(DataError, match=r"line 1: .*lacks column\(s\) label") as err:
        load("twitter_hate", fake_dir)
    assert str(path) in str(err.value)
    path.write_bytes(b"id,label,tweet\n")
    with pytest.raises(DataError, match="no data rows"):
        load("twitter_hate", fake_dir)


def test_registry_covers_split_files():
    for info in DATASETS.values():
        listed = {f.path for f in info.files}
        for rels in info.splits.values():
            assert set(rels) <= listed
        for f in info.files:
            assert len(f.sha256) == 64 and f.size > 0


# ------------------------------------------------------------------------ resolve_data_dir


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    arg, env, cwd = tmp_path / "arg", tmp_path / "env", tmp_path / "cwd"
    for p in (arg, env, cwd / "data"):
        p.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SIFTKIT_DATA_DIR", str(env))
    assert resolve_data_dir(arg) == arg
    assert resolve_data_dir(str(arg)) == arg
    assert resolve_data_dir() == env
    monkeypatch.delenv("SIFTKIT_DATA_DIR")
    assert resolve_data_dir().resolve() == (cwd / "data").resolve()


def test_resolve_data_dir_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data here
    monkeypatch.delenv("SIFTKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "siftkit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # invalid per the XDG spec
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "siftkit"


def test_resolve_data_dir_missing(tmp_path, monkeypatch):
    # A folder the user names must exist; only the cache is created on first use.
    with pytest.raises(DataError) as err:
        resolve_data_dir(tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and "SIFTKIT_DATA_DIR" in msg and "siftkit download" in msg
    monkeypatch.setenv("SIFTKIT_DATA_DIR", str(tmp_path / "envdir"))
    with pytest.raises(DataError, match="envdir"):
        load("cola")
