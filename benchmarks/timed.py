"""Timing a child process for the benchmarks: wall time, the CPU time of it and of every process
it waited for (a papermill job's kernel included), and the machine's load around it.

Imported by benchmarks/shared_machine.py and benchmarks/notebook_times.py (run as
``python benchmarks/<script>.py``, which puts this folder on the import path).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's siftkit, whatever else is installed
    sys.path.insert(0, str(REPO))


def with_repo_path(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with this checkout first on PYTHONPATH, for child processes (a papermill kernel)."""
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p])
    return out


def load() -> list[float]:
    """The 1-, 5- and 15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def busy_cores(seconds: float = 1.0) -> float:
    """Cores' worth of CPU time other processes use now (what the kit's automatic threads see)."""
    from siftkit.run.threads import measure_cpus

    return round(measure_cpus(seconds).busy, 2)


def timed(
    cmd: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None, log: IO | None = None
) -> dict:
    """Run `cmd` to its end: wall seconds, CPU seconds (user + system of the process and of the
    descendants it waited for: `os.wait4`'s usage), exit code, load before and after."""
    before, start = load(), time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        env=None if env is None else dict(env),
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "user_s": round(usage.ru_utime, 2),
        "system_s": round(usage.ru_stime, 2),
        "returncode": proc.returncode,
        "load_before": before,
        "load_after": load(),
    }


class Competitor:
    """One CPU-bound process (a pure-Python busy loop, one thread, pinned to no CPU) while the
    body runs; its CPU seconds tell how much of the machine it got."""

    CODE = "while True:\n    pass\n"

    def __init__(self, settle_s: float = 2.0):
        self.settle_s = settle_s
        self.proc: subprocess.Popen | None = None
        self.cpu_s: float | None = None

    def __enter__(self) -> Competitor:
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE])
        time.sleep(self.settle_s)  # running at full speed before the measured job starts
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        _, _, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = -15
        self.cpu_s = round(usage.ru_utime + usage.ru_stime, 2)


def machine() -> dict:
    """What the numbers were measured on."""
    import psutil
    import torch

    from siftkit.run.records import git_commit
    from siftkit.run.threads import allowed_cpus, torch_default_threads

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": len(allowed_cpus()),
        "physical_cores": psutil.cpu_count(logical=False),
        "torch": torch.__version__,
        "torch_default_threads": torch_default_threads({}),
        "git_commit": git_commit(),
        "python": platform.python_version(),
    }
