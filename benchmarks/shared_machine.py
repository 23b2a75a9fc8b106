"""The main job alone and beside one competing CPU-bound process, for each thread policy.

    python benchmarks/shared_machine.py --pairs 3                                  # README's main job
    python benchmarks/shared_machine.py --pairs 3 --params-file params/lab.yaml    # the lab preset
    python benchmarks/shared_machine.py --policies auto,default,one,passive --pairs 2
    python benchmarks/shared_machine.py --pairs 1 --params-file params/smoke.yaml --out /tmp/s.json  # does it work

The job is README's main job, ``papermill notebooks/02_twitter_to_uci.ipynb out.ipynb -p algo
sift`` (its own params file unless ``--params-file``), each run into a fresh folder. Each
policy runs in pairs: the job on the machine as it is ("idle"), and the job beside one
competitor ("busy": ``python -c 'while True: pass'``, one thread, pinned to no CPU, started
2 s before the job and stopped after it). Within a pair the two runs follow each other;
pairs alternate which comes first, and the order of the policies, so a drift in the
machine's speed falls on both sides.

Policies (how the job's torch threads are set, through the job's environment):

- ``auto``: nothing set; the kit chooses from the cores free when the run starts
  (`siftkit.run.threads`).
- ``default``: ``OMP_NUM_THREADS`` = torch's own default (one per physical core): the kit's
  behaviour before it chose.
- ``one``: ``OMP_NUM_THREADS=1`` (what the README advised on a busy machine).
- ``passive``: as ``auto``, with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP's idle threads sleep
  instead of spinning; read by the OpenMP runtime when the kernel starts).

Every run records its wall time, CPU time (user + system of papermill and its kernel), the
competitor's CPU time, the 1-minute load and the busy cores just before it, and the threads the
run took with the reason (results.json's meta). The targets: busy ≤ 2 × idle for ``auto``,
and ``auto``'s idle time no worse than ``default``'s. Run it on a machine that nothing else
uses: the script says how busy the machine was before each run, and warns when it is not idle.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from timed import REPO, Competitor, busy_cores, load, machine, timed, with_repo_path

NOTEBOOK = "notebooks/02_twitter_to_uci.ipynb"
POLICIES = ("auto", "default", "one", "passive")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
IDLE_BUSY_CORES = 0.3  # more than this busy before an "idle" run: the script warns


def policy_env(policy: str, default_threads: int) -> dict[str, str]:
    env = with_repo_path({k: v for k, v in os.environ.items() if k not in THREAD_VARS})
    if policy == "default":
        env["OMP_NUM_THREADS"] = str(default_threads)
    elif policy == "one":
        env["OMP_NUM_THREADS"] = "1"
    elif policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def job_command(folder: Path, args) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        NOTEBOOK,
        str(folder / "out.ipynb"),
        "--cwd",
        str(REPO),
        "--no-progress-bar",
        "-p",
        "algo",
        args.algo,
        "-p",
        "output_dir",
        str(folder / "run"),
        "-p",
        "overwrite",
        "True",
    ]
    if args.params_file:
        cmd += ["-p", "params_file", args.params_file]
    for item in args.set:
        name, _, value = item.partition("=")
        cmd += ["-p", name, value]
    return cmd


def one_run(policy: str, condition: str, pair: int, args, scratch: Path, default_threads: int) -> dict:
    folder = scratch / f"{policy}-{condition}-{pair}"
    folder.mkdir(parents=True)
    busy_before = busy_cores()
    if condition == "idle" and busy_before > IDLE_BUSY_CORES:
        print(f"  warning: {busy_before} cores busy before an idle run: the machine is not idle", flush=True)
    row = {"policy": policy, "condition": condition, "pair": pair, "busy_cores_before": busy_before}
    with open(folder / "log.txt", "w") as log:
        if condition == "busy":
            with Competitor() as competitor:
                row.update(timed(job_command(folder, args), env=policy_env(policy, default_threads), cwd=REPO, log=log))
            row["competitor_cpu_s"] = competitor.cpu_s
        else:
            row.update(timed(job_command(folder, args), env=policy_env(policy, default_threads), cwd=REPO, log=log))
    results = folder / "run" / "results.json"
    if row["returncode"] != 0 or not results.is_file():
        tail = (folder / "log.txt").read_text(errors="replace")[-3000:]
        raise SystemExit(f"the job failed ({policy}, {condition}, pair {pair}); its log ends:\n{tail}")
    record = json.loads(results.read_text())
    row["torch_threads"] = record["meta"].get("torch_threads")
    row["torch_threads_reason"] = record["meta"].get("torch_threads_reason")
    row["train_wall_s"] = record["meta"].get("wall_time_s")
    row["metrics"] = {k: v for k, v in record["metrics"].items() if k.endswith("_accuracy")}
    if not args.keep:
        shutil.rmtree(folder)
    return row


def plan(pairs: int, policies: list[str]) -> list[tuple[int, str, str]]:
    """(pair, policy, condition) in run order: pairs alternate which condition and which policy go first."""
    order = []
    for pair in range(pairs):
        conditions = ("idle", "busy") if pair % 2 == 0 else ("busy", "idle")
        for policy in policies if pair % 2 == 0 else policies[::-1]:
            order += [(pair, policy, c) for c in conditions]
    return order


def summarize(runs: list[dict], policies: list[str]) -> dict:
    out = {}
    for policy in policies:
        idle = {r["pair"]: r for r in runs if r["policy"] == policy and r["condition"] == "idle"}
        busy = {r["pair"]: r for r in runs if r["policy"] == policy and r["condition"] == "busy"}
        pairs = sorted(set(idle) & set(busy))
        if not pairs:
            continue
        ratios = [busy[p]["wall_s"] / idle[p]["wall_s"] for p in pairs]
        out[policy] = {
            "pairs": len(pairs),
            "idle_wall_s_median": statistics.median(idle[p]["wall_s"] for p in pairs),
            "busy_wall_s_median": statistics.median(busy[p]["wall_s"] for p in pairs),
            "busy_over_idle_per_pair": [round(x, 3) for x in ratios],
            "busy_over_idle_median": round(statistics.median(ratios), 3),
            "idle_cpu_s_median": statistics.median(idle[p]["cpu_s"] for p in pairs),
            "busy_cpu_s_median": statistics.median(busy[p]["cpu_s"] for p in pairs),
            "threads_idle": sorted({idle[p]["torch_threads"] for p in pairs}),
            "threads_busy": sorted({busy[p]["torch_threads"] for p in pairs}),
        }
    if "auto" in out and "default" in out:
        auto = {r["pair"]: r for r in runs if r["policy"] == "auto" and r["condition"] == "idle"}
        default = {r["pair"]: r for r in runs if r["policy"] == "default" and r["condition"] == "idle"}
        both = sorted(set(auto) & set(default))
        out["auto_idle_over_default_idle_per_pair"] = [round(auto[p]["wall_s"] / default[p]["wall_s"], 3) for p in both]
    return out


def table(summary: dict, policies: list[str]) -> str:
    header = (
        "| policy | threads idle / busy | idle wall (median) | busy wall (median) | busy / idle per pair "
        "| busy / idle (median) | CPU idle / busy (median) |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for policy in policies:
        s = summary.get(policy)
        if s is None:
            continue
        threads = f"{'/'.join(map(str, s['threads_idle']))} / {'/'.join(map(str, s['threads_busy']))}"
        lines.append(
            f"| {policy} | {threads} | {s['idle_wall_s_median']:.0f} s | {s['busy_wall_s_median']:.0f} s | "
            f"{', '.join(f'{x:.2f}' for x in s['busy_over_idle_per_pair'])} | "
            f"**{s['busy_over_idle_median']:.2f}** | {s['idle_cpu_s_median']:.0f} s / "
            f"{s['busy_cpu_s_median']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3, help="idle/busy pairs per policy")
    p.add_argument("--policies", default="auto,default", help=f"comma-separated, of {', '.join(POLICIES)}")
    p.add_argument("--algo", default="sift")
    p.add_argument("--params-file", default=None, help="the notebook's params_file (default: its own)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="another -p for the notebook")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "shared_machine_cpu.json"))
    p.add_argument("--scratch", default=None, help="folder for the runs (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep each run's folder (notebook, log, run)")
    args = p.parse_args(argv)
    policies = [x.strip() for x in args.policies.split(",") if x.strip()]
    bad = [x for x in policies if x not in POLICIES]
    if bad or not policies:
        p.error(f"--policies: {', '.join(bad) or 'none given'}; choose from {', '.join(POLICIES)}")
    if args.pairs < 1:
        p.error(f"--pairs must be >= 1, got {args.pairs}")
    for item in args.set:
        if "=" not in item:
            p.error(f"--set must look like NAME=VALUE, got {item!r}")

    info = machine()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="siftkit_shared_machine_"))
    order = plan(args.pairs, policies)
    print(
        f"{len(order)} runs of {NOTEBOOK} (algo {args.algo}, params {args.params_file or 'the notebook default'}) "
        f"on {info['cpus']} CPUs; load {load()}, {busy_cores()} cores busy now",
        flush=True,
    )
    runs, started = [], time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for pair, policy, condition in order:
        row = one_run(policy, condition, pair, args, scratch, info["torch_default_threads"])
        runs.append(row)
        print(
            f"pair {pair} {policy:8s} {condition}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, "
            f"{row['torch_threads']} thread(s) [{row['torch_threads_reason']}], load {row['load_before'][0]} → "
            f"{row['load_after'][0]}"
            + (f", competitor {row['competitor_cpu_s']} s CPU" if condition == "busy" else ""),
            flush=True,
        )
    summary = summarize(runs, policies)
    record = {
        "job": {"notebook": NOTEBOOK, "algo": args.algo, "params_file": args.params_file, "set": args.set},
        "competitor": Competitor.CODE,
        "machine": info,
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pairs": args.pairs,
        "policies": policies,
        "runs": runs,
        "summary": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(table(summary, policies))
    if "auto_idle_over_default_idle_per_pair" in summary:
        print(f"auto idle / default idle, per pair: {summary['auto_idle_over_default_idle_per_pair']}")
    print(f"written: {args.out}")
    if not args.scratch and not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
