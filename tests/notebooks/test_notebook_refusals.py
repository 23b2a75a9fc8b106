"""Bad notebook parameters, tried through papermill itself: the run stops in the first cell with
the message the user sees (a docs/robustness.md row, through `robustness_log`)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import robustness_log

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "params" / "smoke.yaml"
NOTEBOOK = REPO / "notebooks" / "02_twitter_to_uci.ipynb"
_log = robustness_log  # records what the user saw for docs/robustness.md

pytestmark = pytest.mark.subprocess  # papermill itself, as the user runs it


def test_papermill_parameter_of_the_wrong_type(tmp_path):
    if not NOTEBOOK.is_file():
        pytest.skip(f"{NOTEBOOK.relative_to(REPO)} is not there yet")
    for module in ("papermill", "ipykernel"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    out_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp_path / "out.ipynb"), "-p", "seed", "abc",
         "-p", "params_file", str(SMOKE), "-p", "output_dir", str(out_dir)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "ValueError: seed must be of type int, got 'abc'" in output
    assert not out_dir.exists()  # stopped in the first cell, before the run folder is made
    line = next(x for x in output.splitlines() if x.startswith("ValueError: seed"))
    _log("papermill `-p seed abc` (papermill prints the first cell's traceback and exits 1; its last line:)", line)
