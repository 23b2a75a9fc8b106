"""Does ``OMP_WAIT_POLICY=PASSIVE`` act, and when must it be set? A probe, not the main job.

    python benchmarks/wait_policy.py --rounds 3

Each mode runs in a fresh process: 200 × (a 256 × 256 matmul on two threads, then a little
serial Python work), timed for wall and process CPU time. Between parallel regions an OpenMP
runtime that spins keeps its idle thread burning CPU; a passive one sleeps. Modes: the
variable unset; set in ``os.environ`` after ``import torch``; set before ``import torch`` in the
same process; set in the environment the process starts with. Modes alternate round by round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from timed import load

MODES = ("unset", "after_import", "before_import", "environment")

PROBE = r"""
import os, sys, time
mode = sys.argv[1]
if mode == "before_import":
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
import torch
if mode == "after_import":
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
torch.set_num_threads(2)
a = torch.randn(256, 256)
t0, c0 = time.perf_counter(), time.process_time()
for _ in range(200):
    a @ a
    s = 0
    for i in range(20000):
        s += i
print(time.perf_counter() - t0, time.process_time() - c0)
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    results = {m: [] for m in MODES}
    print(f"load before: {load()}")
    for _ in range(args.rounds):
        for mode in MODES:
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
            if mode == "environment":
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            out = subprocess.run(
                [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            results[mode].append((float(out[0]), float(out[1])))
    print(f"load after: {load()}")
    print("| OMP_WAIT_POLICY=PASSIVE | wall (median) | CPU (median) | rounds |\n|---|---|---|---|")
    for mode, rows in results.items():
        print(
            f"| {mode} | {statistics.median(r[0] for r in rows):.2f} s | {statistics.median(r[1] for r in rows):.2f} s "
            f"| {', '.join(f'{w:.2f}/{c:.2f}' for w, c in rows)} |"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
