"""How many CPU threads torch uses for a run: chosen when the run starts, from the cores free then.

Torch takes one intra-op thread per physical core by default, whatever else the machine runs.
On a shared machine (a lab's laptops, a course's server) that oversubscribes the cores: a
parallel region ends only when its slowest thread does, and a thread that shares its core with
another job makes every region wait for it, while the waiting threads spin. On a 2-core machine
beside other jobs (load about 3) the main job took 1063 s with two threads and 703 s with one.

The choice, in order (the first that applies):

1. ``num_threads`` in the run's config: used as given.
2. ``torch.set_num_threads(n)`` called before the run (torch's count differs from its own
   default): kept.
3. ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) in the environment: torch's count, which it
   took from there, is kept.
4. On an accelerator: torch's default is kept (the CPU only feeds the device).
5. Otherwise, automatically: the CPUs this process may run on, less the cores' worth of CPU time
   that other processes used over `SAMPLE_S` seconds just before (``psutil.cpu_percent``, this
   process's own share taken out), rounded, at least 1 and at most torch's default. On an idle
   machine that is torch's default, so an idle run is what it was.

The count is set for the run and put back when it ends, so `train()` leaves the process's
threads as it found them. Thread counts change the order of a reduction, so results repeat
bit for bit only at a fixed count: set ``num_threads`` (or ``OMP_NUM_THREADS``) for that.

Not done here, and why:

- Inter-op threads are left alone: torch allows setting them once per process, before any
  inter-op work, and a training step does not use them.
- ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep instead of spinning) is read by the
  OpenMP runtime when it loads, with ``import torch``: setting it in ``os.environ`` afterwards
  changes nothing (benchmarks/wait_policy.py: small 2-thread matmuls between serial Python
  work took the same time with and without it; set before the import, far less on a busy
  machine). To use it, set it in the environment before Python starts
  (``OMP_WAIT_POLICY=PASSIVE jupyter lab``); benchmarks/shared_machine.py measures it on the
  main job beside the automatic choice.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

# Seconds over which the CPU time other processes use is measured before a run (the run waits).
SAMPLE_S = 0.5
# The environment variables torch reads its thread count from at start, in the order it reads them.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class CpuState:
    """What the automatic choice looks at."""

    cores: int  # CPUs this process may run on (its affinity)
    torch_default: int  # the intra-op threads torch takes by itself (one per physical core)
    busy: float  # cores' worth of CPU time other processes used over the sample
    load: float | None  # the 1-minute load average, for the record (None where the system has none)


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count of a run, how it was decided, and why."""

    threads: int
    source: str  # "num_threads", "torch.set_num_threads", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "accelerator", "auto"
    reason: str  # one line for results.json and the progress line

    @property
    def short(self) -> str:
        """For every progress line: ``1 thread (auto)``."""
        return f"{self.threads} thread{'s' if self.threads != 1 else ''} ({self.source})"


def env_threads(env: Mapping[str, str]) -> tuple[str, int] | None:
    """(variable, count) from the first of `THREAD_ENV_VARS` set to a positive count, else None.

    OpenMP's variable may list counts per nesting level (``4,2``); the first is the one that counts.
    A value that is no positive count is ignored here, as torch ignores it.
    """
    for var in THREAD_ENV_VARS:
        text = env.get(var, "").split(",")[0].strip()
        if text.isdigit() and int(text) > 0:
            return var, int(text)
    return None


def torch_default_threads(env: Mapping[str, str] | None = None) -> int:
    """The intra-op thread count torch starts with: the environment's count, else one per
    physical core (torch's default, from cpuinfo; psutil reads the same topology)."""
    import psutil

    found = env_threads(os.environ if env is None else env)
    if found is not None:
        return found[1]
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where the system has no affinity call)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def measure_cpus(sample_s: float = SAMPLE_S, env: Mapping[str, str] | None = None) -> CpuState:
    """The cores this process may use and how busy other processes keep them, over `sample_s` s.

    Busy time is psutil's per-CPU share (all but idle and I/O wait) on the allowed CPUs, less
    this process's own CPU time over the same interval (its other threads may be working)."""
    import psutil

    cpus = allowed_cpus()
    me = psutil.Process()
    psutil.cpu_percent(percpu=True)  # starts the interval
    own_before, start = sum(me.cpu_times()[:2]), time.monotonic()
    time.sleep(sample_s)
    percents = psutil.cpu_percent(percpu=True)
    elapsed = max(time.monotonic() - start, 1e-3)
    own = (sum(me.cpu_times()[:2]) - own_before) / elapsed
    busy = sum(percents[i] for i in cpus if i < len(percents)) / 100.0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return CpuState(cores=len(cpus), torch_default=torch_default_threads(env), busy=max(0.0, busy - own), load=load)


def auto_threads(state: CpuState) -> ThreadChoice:
    """The automatic choice from `state`: the free cores, rounded, in [1, torch's default]."""
    cap = max(1, min(state.cores, state.torch_default))
    free = state.cores - state.busy
    threads = max(1, min(cap, math.floor(free + 0.5)))
    load = f", load {state.load:.1f}" if state.load is not None else ""
    cores = f"{state.cores} core{'s' if state.cores != 1 else ''}"
    return ThreadChoice(
        threads,
        "auto",
        f"auto: {cores}, {state.busy:.1f} busy with other work{load} → {threads} thread{'s' if threads != 1 else ''}",
    )


def choose_threads(
    requested: int | None,
    *,
    on_cpu: bool,
    current: int,
    env: Mapping[str, str] | None = None,
    measure: Callable[[], CpuState] | None = None,
) -> ThreadChoice:
    """The run's intra-op threads (the module's rules, in order). `current` is torch's count now;
    `measure` is called only when the choice is automatic (it waits `SAMPLE_S` seconds)."""
    env = os.environ if env is None else env
    if requested is not None:
        return ThreadChoice(requested, "num_threads", f"num_threads={requested} in the config")
    default = torch_default_threads(env)
    if current != default:
        return ThreadChoice(
            current,
            "torch.set_num_threads",
            f"{current} set before the run (torch.set_num_threads; torch's default here is {default})",
        )
    found = env_threads(env)
    if found is not None:
        var, count = found
        return ThreadChoice(count, var, f"{var}={count} in the environment")
    if not on_cpu:
        return ThreadChoice(current, "accelerator", f"torch's default {current} (the run is on an accelerator)")
    if min(default, len(allowed_cpus())) == 1:  # nothing to choose: no need to wait for a measurement
        return ThreadChoice(1, "auto", "auto: 1 core → 1 thread")
    return auto_threads((measure or (lambda: measure_cpus(env=env)))())


@contextlib.contextmanager
def run_threads(requested: int | None, *, on_cpu: bool) -> Iterator[ThreadChoice]:
    """Torch's intra-op threads as `choose_threads` decides, for the body; put back afterwards."""
    import torch

    before = torch.get_num_threads()
    choice = choose_threads(requested, on_cpu=on_cpu, current=before)
    if choice.threads != before:
        torch.set_num_threads(choice.threads)
    try:
        yield choice
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
