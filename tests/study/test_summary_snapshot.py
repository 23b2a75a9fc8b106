"""`summarize` on a fixed set of the committed results gives the snapshot byte for byte: the same
SUMMARY.md and the same PNG bytes (`tests/fixtures/make_summary_snapshot.py` wrote them with the
code whose output is the reference, and says which runs; runs that land later are not read)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = REPO / "tests" / "fixtures" / "summary_snapshot"
sys.path.insert(0, str(REPO / "tests" / "fixtures"))

from make_summary_snapshot import copy_tree, plotting_versions, sha256, summarize_into  # noqa: E402

pytestmark = pytest.mark.slow  # ~20 s: 482 records, 40 figures


@pytest.fixture(scope="module")
def summarized(tmp_path_factory) -> tuple[dict, Path]:
    manifest = json.loads((SNAPSHOT / "manifest.json").read_text())
    results = REPO / "results"
    changed = [
        rel
        for rel, digest in {**manifest["specs"], **manifest.get("inputs", {}), **manifest["runs"]}.items()
        if not (results / rel).is_file() or sha256(results / rel) != digest
    ]
    assert not changed, (
        f"{len(changed)} of the snapshot's files under results/ are gone or changed (e.g. {changed[0]}); "
        "regenerate the snapshot with the code before your change: "
        "python tests/fixtures/make_summary_snapshot.py"
    )
    tmp = tmp_path_factory.mktemp("snapshot")
    copy_tree(manifest, results, tmp / "results")
    summarize_into(tmp / "results", tmp / "out")
    return manifest, tmp / "out"


def test_summary_md_is_byte_identical(summarized):
    _, out = summarized
    got, want = (out / "SUMMARY.md").read_text(), (SNAPSHOT / "SUMMARY.md").read_text()
    if got != want:
        import difflib

        diff = "".join(list(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "snapshot", "now"))[:60])
        pytest.fail(f"SUMMARY.md differs from the snapshot:\n{diff}")


def test_figures_are_byte_identical(summarized):
    manifest, out = summarized
    made = {p.name: sha256(p) for p in sorted((out / "figures").glob("*.png"))}
    assert sorted(made) == sorted(manifest["figures"])  # the same files, before any byte is compared
    if plotting_versions() != manifest["versions"]:
        pytest.skip(
            f"the snapshot's PNGs were drawn with {manifest['versions']}, these with {plotting_versions()}: "
            "bytes are compared only with the same libraries"
        )
    assert {n: d for n, d in made.items() if manifest["figures"][n] != d} == {}
