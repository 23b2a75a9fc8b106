"""A shift spec's relative files are read from the spec file's folder, wherever the run starts:
a spec file named on the CLI or in Python, a params file holding the spec, a notebook
parameter; a missing file's error names the folder looked in; one spec in two folders keeps
one hash (one summary group)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_shift import TINY, _pair_files, _spec

from siftkit.data.shift_spec import load_spec_mapping, parse_spec
from siftkit.run.config import RunConfig
from siftkit.run.protocols import build_stages

REPO = Path(__file__).resolve().parents[2]


def _relative_spec_folder(tmp_path: Path) -> Path:
    """A folder holding reviews.csv, tweets.jsonl and a spec naming them by relative paths."""
    folder = tmp_path / "myshift"
    folder.mkdir()
    _pair_files(folder)
    (folder / "spec.yaml").write_text(yaml.safe_dump(_spec("reviews.csv", "tweets.jsonl")))
    return folder


def test_a_spec_file_reads_its_files_from_its_own_folder(tmp_path, monkeypatch):
    folder = _relative_spec_folder(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the spec's folder
    cfg = RunConfig(task="shift", shift=str(folder / "spec.yaml"), **TINY)
    assert cfg.shift["base_dir"] == str(folder.resolve())
    spec = parse_spec(cfg.shift)
    assert spec.stages[0].data.files == (str(folder.resolve() / "reviews.csv"),)
    assert len(build_stages(cfg)[0].train) > 0
    # read back from results.json (a resume, a notebook): the same files
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert parse_spec(again.shift).evals[0].data.files == (str(folder.resolve() / "tweets.jsonl"),)


def test_a_params_file_with_an_inline_spec_reads_from_the_params_files_folder(tmp_path, monkeypatch):
    folder = _relative_spec_folder(tmp_path)
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump({"task": "shift", "shift": _spec("reviews.csv", "tweets.jsonl")}))
    nested = folder / "specs"
    nested.mkdir()
    (nested / "only_spec.yaml").write_text(yaml.safe_dump(_spec("../reviews.csv", "../tweets.jsonl")))
    (folder / "by_path.yaml").write_text(yaml.safe_dump({"task": "shift", "shift": "specs/only_spec.yaml"}))
    monkeypatch.chdir(tmp_path)
    for path, base in ((params, folder), (folder / "by_path.yaml", nested)):
        cfg = RunConfig.from_yaml(path, **TINY)
        assert cfg.shift["base_dir"] == str(base.resolve())
        assert Path(parse_spec(cfg.shift).stages[0].data.files[0]).resolve() == (folder / "reviews.csv").resolve()
        assert len(build_stages(cfg)[0].train) > 0


def test_one_spec_in_two_folders_keeps_one_hash(tmp_path):
    first = _relative_spec_folder(tmp_path)
    second = tmp_path / "copy"
    shutil.copytree(first, second)
    a, b = load_spec_mapping(first / "spec.yaml"), load_spec_mapping(second / "spec.yaml")
    assert a["base_dir"] != b["base_dir"]
    assert parse_spec(a).digest == parse_spec(b).digest == parse_spec(_spec("reviews.csv", "tweets.jsonl")).digest


def test_a_missing_file_names_the_folder_it_looked_in(tmp_path, monkeypatch):
    folder = _relative_spec_folder(tmp_path)
    (folder / "tweets.jsonl").unlink()
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig(task="shift", shift=str(folder / "spec.yaml"), **TINY)
    with pytest.raises(ValueError) as err:
        build_stages(cfg)
    assert f"file not found: {folder.resolve() / 'tweets.jsonl'}" in str(err.value)
    with pytest.raises(ValueError, match="shift.base_dir must be a folder"):
        parse_spec({**_spec("a.csv", "b.csv"), "base_dir": 3})


@pytest.mark.subprocess
def test_the_cli_reads_a_spec_from_another_folder(tmp_path):
    """`siftkit train --shift <spec>` from a folder that is not the spec's: the spec's files are found."""
    folder = _relative_spec_folder(tmp_path)
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "siftkit",
            "train",
            "--task",
            "shift",
            "--shift",
            str(folder / "spec.yaml"),
            "--model_name",
            "random:bert",
            "--max_length",
            "32",
            "--output_dir",
            str(out),
            "--cpu",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # this checkout's siftkit
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "results.json").read_text())
    assert "tweets_accuracy" in record["metrics"]
    assert record["config"]["shift"]["base_dir"] == str(folder.resolve())
