"""A plan as a stable, numbered run list: --list, --index, --shard, --launcher submitit, sbatch."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import robustness_log

import siftkit.cli.sweep as sweep
from siftkit.cli import cluster, launch
from siftkit.cli.main import main as cli_main

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "params" / "smoke.yaml"


def _plan(tmp_path, text: str) -> Path:
    path = tmp_path / "study.plan"
    path.write_text(text.format(smoke=SMOKE))
    return path


# Orders that no sorting would give: algorithms and seeds as written, the file's lines in order.
PLAN = """# a comment
--params {smoke} --algos sift,plain --seeds 3,1
--params {smoke} --algos smart --seeds 2 --tag later --adv_weight 2
"""
EXPECTED = ["sift/seed3", "sift/seed1", "plain/seed3", "plain/seed1", "smart-later/seed2"]


def _list(capsys, *args) -> list[str]:
    capsys.readouterr()  # what earlier calls printed
    assert cli_main(["sweep", *args, "--list"]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.subprocess
def test_the_list_is_the_plan_in_its_own_order_and_stable(tmp_path, capsys):
    plan, out = _plan(tmp_path, PLAN), tmp_path / "out"
    lines = _list(capsys, "--plan", str(plan), "--output-dir", str(out))
    rows = [line.split("\t") for line in lines]
    assert [int(r[0]) for r in rows] == list(range(5))
    assert [Path(r[1]).relative_to(out / "twitter_to_uci").as_posix() for r in rows] == EXPECTED
    # The command is the one the run gets: it names its own folder and its tag's options.
    assert shlex.split(rows[4][2])[:3] == ["python", "-m", "siftkit"]
    assert "--adv_weight=2" in rows[4][2] and f"--output_dir {rows[4][1]}" in rows[4][2]
    # The same in a later call, once some runs are finished, and in another process with
    # another hash seed and working folder (another machine).
    (Path(rows[1][1])).mkdir(parents=True)
    (Path(rows[1][1]) / "results.json").write_text("{}")
    assert _list(capsys, "--plan", str(plan), "--output-dir", str(out)) == lines
    other = subprocess.run(
        [sys.executable, "-m", "siftkit", "sweep", "--plan", str(plan), "--output-dir", str(out), "--list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout.splitlines() == lines


def test_entry_i_is_exactly_the_run_the_pool_makes(tmp_path, capsys, monkeypatch):
    plan, out = _plan(tmp_path, PLAN), tmp_path / "out"
    calls: list[list[str]] = []

    def fake_call(cmd, **kwargs):
        calls.append(cmd[3:])  # after python -m siftkit
        return 0

    monkeypatch.setattr(launch.subprocess, "call", fake_call)
    assert cli_main(["sweep", "--plan", str(plan), "--output-dir", str(out), "--jobs", "1"]) == 0
    pool = list(calls)
    assert len(pool) == 5
    listed = [
        shlex.split(line.split("\t")[2])[3:] for line in _list(capsys, "--plan", str(plan), "--output-dir", str(out))
    ]
    assert listed == pool
    for i in range(5):
        calls.clear()
        assert cli_main(["sweep", "--plan", str(plan), "--output-dir", str(out), "--index", str(i)]) == 0
        assert calls == [pool[i]]
    # An interrupted entry resumes, as in the pool; a finished one is skipped.
    run_dir = Path(_list(capsys, "--plan", str(plan), "--output-dir", str(out))[3].split("\t")[1])
    (run_dir / "checkpoints" / "step-0000004").mkdir(parents=True)
    calls.clear()
    assert cli_main(["sweep", "--plan", str(plan), "--output-dir", str(out), "--index", "3"]) == 0
    assert calls == [pool[3] + ["--resume"]]
    (run_dir / "results.json").write_text("{}")
    calls.clear()
    assert cli_main(["sweep", "--plan", str(plan), "--output-dir", str(out), "--index", "3"]) == 0
    assert calls == [] and "already done" in capsys.readouterr().out


def test_a_failed_entry_gives_its_exit_code(tmp_path, monkeypatch):
    monkeypatch.setattr(launch.subprocess, "call", lambda cmd, **kw: 3)
    plan = _plan(tmp_path, PLAN)
    assert cli_main(["sweep", "--plan", str(plan), "--output-dir", str(tmp_path / "o"), "--index", "0"]) == 3


@pytest.mark.parametrize("index", ["5", "-1", "99"])
def test_an_index_out_of_range_is_a_clear_error(tmp_path, capsys, index):
    plan = _plan(tmp_path, PLAN)
    assert cli_main(["sweep", "--plan", str(plan), "--output-dir", str(tmp_path / "o"), "--index", index]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"siftkit sweep: error: --index {index} is out of range: the plan has 5 run(s) (indices 0-4; see --list)"
    )
    robustness_log(f"`sweep --plan P --index {index}` (a plan of 5 runs)", err.strip())


def test_a_waiting_entry_exits_with_its_own_code(tmp_path, capsys, monkeypatch):
    """Runs that need others' results (a later `waiting` attribute) are not started."""
    real = sweep.plan_file

    def with_waiting(path, output_dir):
        runs = real(path, output_dir)
        runs[4].waiting = "the grid smart-later has 2 runs to finish"
        return runs

    monkeypatch.setattr(sweep, "plan_file", with_waiting)
    monkeypatch.setattr(launch.subprocess, "call", lambda cmd, **kw: pytest.fail("a waiting run was started"))
    plan = _plan(tmp_path, PLAN)
    code = cli_main(["sweep", "--plan", str(plan), "--output-dir", str(tmp_path / "o"), "--index", "4"])
    assert code == cluster.EXIT_WAITING == 75
    assert (
        "is waiting: the grid smart-later has 2 runs to finish; try it again later (exit 75)" in capsys.readouterr().err
    )


def test_shards_split_the_list_by_stride(tmp_path, capsys):
    plan, out = _plan(tmp_path, PLAN), str(tmp_path / "out")
    shards = [_list(capsys, "--plan", str(plan), "--output-dir", out, "--shard", f"{i}/2") for i in range(2)]
    assert [[int(line.split("\t")[0]) for line in s] for s in shards] == [[0, 2, 4], [1, 3]]
    assert cli_main(["sweep", "--plan", str(plan), "--output-dir", out, "--shard", "1/2", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "sweep: 2 runs, 0 already done, 2 to run"
    for bad, message in (("2/2", "need 0 <= i < N"), ("1-2", "must look like i/N")):
        assert cli_main(["sweep", "--plan", str(plan), "--output-dir", out, "--shard", bad]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.subprocess
def test_the_sbatch_script_runs_its_task_and_retries_a_waiting_one(tmp_path):
    script = REPO / "scripts" / "slurm_array.sbatch"
    text = script.read_text()
    assert "#SBATCH --array=0-" in text and "#SBATCH --gpus-per-task=1" in text
    # A stand-in python: says "waiting" (75) on its first call, then succeeds.
    fake, log = tmp_path / "python", tmp_path / "calls"
    fake.write_text(f'#!/bin/bash\necho "$@" >> {log}\n[ $(wc -l < {log}) -ge 2 ] && exit 0\nexit 75\n')
    fake.chmod(0o755)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "7", "SIFTKIT_PYTHON": str(fake), "SIFTKIT_WAIT_S": "0"}
    done = subprocess.run(
        ["bash", str(script), "study.plan", "out"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == ["-m siftkit sweep --plan study.plan --output-dir out --index 7"] * 2


@pytest.mark.multiprocess
def test_a_two_run_plan_completes_through_submitits_local_executor(tmp_path):
    pytest.importorskip("submitit")
    plan = _plan(
        tmp_path,
        "--params {smoke} --algos plain,sift --seeds 1 --max_train_samples 8 --max_eval_samples 8 "
        "--eval_smoothness false --uci_num_train_epochs 1 --cpu\n",
    )
    out = tmp_path / "out"
    # The local executor kills a job after 2 minutes unless told otherwise: --slurm-time says 10.
    cmd = [
        sys.executable,
        "-m",
        "siftkit",
        "sweep",
        "--plan",
        str(plan),
        "--output-dir",
        str(out),
        "--launcher",
        "submitit",
        "--submitit-cluster",
        "local",
        "--slurm-time",
        "10",
        "--slurm-gpus",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitting 2 run(s) through submitit (local)" in done.stdout
    for algo in ("plain", "sift"):
        record = json.loads((out / "twitter_to_uci" / algo / "seed1" / "results.json").read_text())
        assert record["config"]["algo"] == algo and record["config"]["max_train_samples"] == 8
    assert done.stdout.count(" ok (job ") == 2
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "submitting 0 run(s)" in again.stdout


def test_the_list_says_why_an_entry_has_no_command_yet(tmp_path):
    from siftkit.cli.cluster import format_list
    from siftkit.cli.sweep import PlannedRun

    waiting = PlannedRun(
        "plain", 4, tmp_path / "plain-lr__chosen" / "seed4", [], waiting="4 of 8 grid runs not finished"
    )
    line = format_list([(7, waiting)])
    assert line == f"7\t{tmp_path / 'plain-lr__chosen' / 'seed4'}\t# waiting: 4 of 8 grid runs not finished"
