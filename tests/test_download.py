"""siftkit.download against a local HTTP server holding copies of the real files."""

import functools
import hashlib
import shutil
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from siftkit.data import DATASETS, DataError, load
from siftkit.download import FILES, SOURCES, download

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

        self.httpd = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.zip_path = root / "cola_public_1.1.zip"
        self.base_urls = {"cola_zip": f"{base}/cola_public_1.1.zip"}
        for key in SOURCES:
            if key != "cola_zip":
                self.base_urls[key] = f"{base}/{key}/"

    def local(self, rel: str) -> Path:
        """The served copy behind data-folder path ``rel`` (for non-zip sources)."""
        key, sub = FILES[rel]
        assert key != "cola_zip"
        return self.root / key / sub

    def build_zip(self, data_dir: Path, corrupt: str | None = None) -> str:
        """(Re)build the CoLA zip in the official layout; return its sha256."""
        with zipfile.ZipFile(self.zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel, (key, sub) in FILES.items():
                if key == "cola_zip":
                    data = (data_dir / rel).read_bytes()
                    if rel == corrupt:
                        data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
                    zf.writestr(sub, data)
        return _sha(self.zip_path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(tmp_path, data_dir):
    srv = Server(tmp_path / "srv")
    for rel, (key, _sub) in FILES.items():
        if key != "cola_zip":
            dst = srv.local(rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_dir / rel, dst)
    srv.zip_sha = srv.build_zip(data_dir)
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


def test_download_all_then_nothing(server, tmp_path, capsys):
    out = tmp_path / "out"
    paths = download(out, base_urls=server.base_urls, cola_zip_sha256=server.zip_sha)
    assert sorted(paths) == sorted(out / rel for rel in SHA)
    for rel, sha in SHA.items():
        assert _sha(out / rel) == sha, rel
    # one request per non-zip file, one for the zip
    assert len(server.requests) == sum(k != "cola_zip" for k, _ in FILES.values()) + 1
    assert any("sentiment%20labelled%20sentences/readme.txt" in r for r in server.requests)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SHA) and all("fetched" in line for line in lines)
    assert len(load("cola", out)["train"]) == 8551
    assert len(load("twitter_hate", out)["train"]) == 31962
    assert len(load("uci_sentiment", out)["pool"]) == 3000
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]

    server.requests.clear()
    again = download(out, base_urls=server.base_urls, cola_zip_sha256=server.zip_sha)
    assert sorted(again) == sorted(paths)
    assert server.requests == []
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SHA) and all("ok, already present" in line for line in lines)


def test_corrupted_file_leaves_nothing(server, tmp_path):
    rel = "twitter_hate/test.csv"
    _corrupt(server.local(rel))
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        download(out, base_urls=server.base_urls, cola_zip_sha256=server.zip_sha)
    msg = str(err.value)
    assert "test.csv" in msg and SHA[rel] in msg and _sha(server.local(rel)) in msg
    assert _leftovers(out / "twitter_hate", "test.csv") == []


def test_corrupted_zip_member_leaves_nothing(server, tmp_path, data_dir):
    rel = "cola/in_domain_dev.tsv"
    zip_sha = server.build_zip(data_dir, corrupt=rel)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        download(out, base_urls=server.base_urls, cola_zip_sha256=zip_sha)
    assert "in_domain_dev.tsv" in str(err.value) and SHA[rel] in str(err.value)
    assert _leftovers(out / "cola", "in_domain_dev") == []


def test_wrong_zip_hash(server, tmp_path):
    out = tmp_path / "out"
    # the default expected hash is the official zip's; the test zip differs from it
    with pytest.raises(DataError) as err:
        download(out, base_urls=server.base_urls)
    assert "CoLA zip" in str(err.value) and server.zip_sha in str(err.value)
    assert _leftovers(out / "cola", "") == []


def test_good_file_not_replaced_by_corrupt_forced_download(server, tmp_path):
    out = tmp_path / "out"
    download(out, base_urls=server.base_urls, cola_zip_sha256=server.zip_sha)
    rel = "uci_sentiment/imdb_labelled.txt"
    _corrupt(server.local(rel))
    before = (out / rel).stat().st_mtime_ns
    with pytest.raises(DataError, match="imdb_labelled.txt.*sha256 mismatch"):
        download(out, base_urls=server.base_urls, cola_zip_sha256=server.zip_sha, force=True)
    assert _sha(out / rel) == SHA[rel]
    assert (out / rel).stat().st_mtime_ns == before
    assert _leftovers(out / "uci_sentiment", "imdb") == ["imdb_labelled.txt"]


def test_bad_existing_file_is_refetched(server, tmp_path):
    out = tmp_path / "out"
    download(out, base_urls=server.base_urls, cola_zip_sha256=server.zip_sha)
    rel = "uci_sentiment/yelp_labelled.txt"
    _corrupt(out / rel)
    server.requests.clear()
    download(out, base_urls=server.base_urls, cola_zip_sha256=server.zip_sha)
    assert _sha(out / rel) == SHA[rel]
    assert server.requests == ["/sift/Data/yelp_labelled.txt"]


def test_http_404(server, tmp_path):
    rel = "uci_sentiment/readme.txt"
    server.local(rel).unlink()
    out = tmp_path / "out"
    with pytest.raises(DataError, match="404") as err:
        download(out, base_urls=server.base_urls, cola_zip_sha256=server.zip_sha)
    assert "readme.txt" in str(err.value)
    assert _leftovers(out / "uci_sentiment", "readme") == []


def test_unreachable_and_unknown_source(server, tmp_path):
    urls = dict(server.base_urls, sift="http://127.0.0.1:9/nothing/")
    with pytest.raises(DataError, match="train.csv.*failed"):
        download(tmp_path / "out", base_urls=urls, cola_zip_sha256=server.zip_sha, timeout=5)
    with pytest.raises(ValueError, match="unknown source"):
        download(tmp_path / "out", base_urls={"nope": "http://x/"})
