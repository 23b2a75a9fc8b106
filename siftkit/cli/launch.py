"""One planned run in a process of its own: the same for the local pool (`siftkit.cli.sweep`)
and a cluster entry (`siftkit.cli.cluster`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from siftkit.run.checkpoint import list_checkpoints


def run_one(run, log_dir: Path) -> tuple[object, int, float]:
    """Run a planned run as `python -m siftkit train ...` in its own process, its output to a log
    in `log_dir`; resumed from its checkpoints if it has any. Returns (run, exit code, seconds)."""
    args = list(run.args)
    if list_checkpoints(run.run_dir):
        args.append("--resume")
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{run.run_dir.parent.parent.name}-{run.run_dir.parent.name}-seed{run.seed}.log"
    start = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ python -m siftkit {' '.join(args)}\n")
        fh.flush()
        code = subprocess.call(
            [sys.executable, "-m", "siftkit", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    return run, code, time.time() - start
