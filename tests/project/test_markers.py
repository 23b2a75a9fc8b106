"""The fast loop's marks: a test that starts a process without its mark fails (tests/conftest.py),
and the README's fast command leaves out every mark that pyproject.toml registers for processes."""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
PROCESS_MARKS = {"notebooks", "subprocess", "multiprocess"}


def test_an_unmarked_test_that_starts_a_process_fails_naming_the_command():
    with pytest.raises(
        pytest.fail.Exception,
        match=r"starts a process \(.*python.* -c pass\); mark it "
        r"@pytest.mark.subprocess",
    ):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    with pytest.raises(pytest.fail.Exception, match=r"starts a process .*; mark it @pytest.mark.subprocess"):
        subprocess.run("echo hi", shell=True, check=True)


def test_an_unmarked_test_that_starts_a_multiprocessing_process_fails():
    with pytest.raises(pytest.fail.Exception, match=r"mark it @pytest.mark.multiprocess"):
        multiprocessing.get_context("spawn").Process(target=print).start()


def test_git_and_uname_may_run_unmarked():
    """Every run records its commit (git) and platform (uname -p): no reason to mark a test."""
    assert subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout.startswith("git")
    assert subprocess.run(["uname", "-s"], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.subprocess
def test_a_marked_test_may_start_a_process():
    done = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True, check=True)
    assert done.stdout == "42\n"


def test_the_readme_fast_command_leaves_out_every_process_mark_and_slow():
    registered = {
        line.split(":")[0]
        for line in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    }
    assert PROCESS_MARKS | {"slow"} <= registered
    readme = (REPO / "README.md").read_text()
    (expression,) = set(re.findall(r'python -m pytest -q -m "([^"]+)"', readme))
    assert set(re.findall(r"not (\w+)", expression)) == PROCESS_MARKS | {"slow"}
