"""Each course notebook's run time under papermill, with the course site's parameters.

    python benchmarks/notebook_times.py                                   # 00..05 as the site runs them
    python benchmarks/notebook_times.py --only 02_twitter_to_uci 04_compare
    python benchmarks/notebook_times.py --params-file params/smoke.yaml --only 00_tour --out /tmp/t.json  # a check

Each notebook runs as `scripts/course_site.py --execute` runs it (its ``SITE_PARAMETERS``: the
lab preset where it trains), in course order, with one change: the runs go under
``--runs-dir`` (default ``runs/notebook_times``) instead of ``runs/site``, so the site's own
runs are left alone; 01 and 04 read the runs that 02, 03 and 05 wrote there, as on the site.
The notebooks are the committed ones (the teacher's version of 00 and 05, solutions included).

Per notebook: wall time, CPU time (user + system of papermill and its kernel), the 1-minute
load before and after, and for a notebook that trains, the threads each run took and why
(results.json's meta). Written to ``--out`` as JSON; printed as a markdown table in the columns
of COURSE.md's notebook table. Threads are the kit's choice unless the environment sets
``OMP_NUM_THREADS`` (recorded).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from timed import REPO, busy_cores, load, machine, timed, with_repo_path

SITE_RUNS = "runs/site"
PATH_PARAMETERS = {"output_dir", "overwrite", "runs_glob", "results_glob"}  # where things go: not in the table


def site_parameters() -> tuple[list[str], dict[str, dict]]:
    """(the notebooks in course order, their parameters) from scripts/course_site.py."""
    spec = importlib.util.spec_from_file_location("course_site", REPO / "scripts" / "course_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.NOTEBOOKS), dict(module.SITE_PARAMETERS)


def parameters(name: str, site: dict, runs_dir: str, params_file: str | None) -> dict:
    """The site's parameters of `name`, its runs moved from runs/site to `runs_dir`; `params_file`
    given to every notebook that takes one."""
    import papermill

    out = {
        k: (runs_dir + v[len(SITE_RUNS) :] if isinstance(v, str) and v.startswith(SITE_RUNS) else v)
        for k, v in site.items()
    }
    if params_file is not None and "params_file" in papermill.inspect_notebook(
        str(REPO / "notebooks" / f"{name}.ipynb")
    ):
        out["params_file"] = params_file
    return out


def finished_runs(root: Path, since: float) -> list[dict]:
    """The threads of every results.json under `root` written after `since`."""
    found = []
    for path in sorted(root.rglob("results.json")) if root.is_dir() else []:
        if path.stat().st_mtime < since:
            continue
        meta = json.loads(path.read_text()).get("meta", {})
        found.append(
            {
                "run": str(path.parent.relative_to(REPO) if path.is_relative_to(REPO) else path.parent),
                "torch_threads": meta.get("torch_threads"),
                "torch_threads_reason": meta.get("torch_threads_reason"),
                "train_wall_s": meta.get("wall_time_s"),
            }
        )
    return found


def run_notebook(name: str, params: dict, executed: Path, runs_root: Path, cell_timeout_s: int) -> dict:
    """One notebook, timed. A cell that runs past `cell_timeout_s` is taken for the messaging
    hang tests/notebooks/test_notebooks.py retries (seen with 00's widget cell: kernel idle, client
    waiting): the notebook runs once more, and the row keeps the hung attempt's wall time."""
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        f"notebooks/{name}.ipynb",
        str(executed / f"{name}.ipynb"),
        "--cwd",
        str(REPO),
        "--no-progress-bar",
        "-k",
        "python3",
        "--execution-timeout",
        str(cell_timeout_s),
        "-y",
        json.dumps(params),
    ]
    hung = []
    for attempt in (1, 2):
        since = time.time()
        log_path = executed / f"{name}.log"
        with open(log_path, "w") as log:
            row = {
                "notebook": name,
                "parameters": params,
                "busy_cores_before": busy_cores(),
                **timed(cmd, env=with_repo_path(os.environ), cwd=REPO, log=log),
            }
        text = log_path.read_text(errors="replace")
        if row["returncode"] != 0 and attempt == 1 and "timed out" in text.lower():
            hung.append(row["wall_s"])
            print(f"{name}: a cell ran past {cell_timeout_s} s (a hang?); running it once more", flush=True)
            continue
        break
    if row["returncode"] != 0:
        raise SystemExit(f"{name} failed; its log ends:\n{text[-3000:]}")
    row["hung_attempts_wall_s"] = hung
    row["runs"] = finished_runs(runs_root, since)
    return row


def threads_text(row: dict) -> str:
    """The threads of the notebook's training runs; a notebook that trains nothing runs on torch's own."""
    counts = sorted({r["torch_threads"] for r in row["runs"]} - {None})
    if counts:
        return "/".join(map(str, counts))
    env = os.environ.get("OMP_NUM_THREADS")
    return f"OMP_NUM_THREADS={env}" if env else "torch's default (no run)"


def table(rows: list[dict]) -> str:
    lines = [
        "| # | notebook | run time (load before → after) | CPU time | threads | settings of the timing |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        settings = ", ".join(f"{k}={v}" for k, v in row["parameters"].items() if k not in PATH_PARAMETERS) or "defaults"
        lines.append(
            f"| {row['notebook'][:2]} | {row['notebook']} | {row['wall_s']:.0f} s "
            f"({row['load_before'][0]:.1f} → {row['load_after'][0]:.1f}) | {row['cpu_s']:.0f} s | "
            f"{threads_text(row)} | {settings} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", default=None, help="these notebooks (names without .ipynb), in course order")
    p.add_argument(
        "--params-file", default=None, help="params_file for every notebook that takes one (a check: params/smoke.yaml)"
    )
    p.add_argument("--runs-dir", default="runs/notebook_times", help="where the runs go, instead of runs/site")
    p.add_argument("--executed", default=None, help="folder for the executed notebooks and logs (default: temporary)")
    p.add_argument("--cell-timeout", type=int, default=1800, help="seconds a cell may run before it counts as hung")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "notebook_times_cpu.json"))
    args = p.parse_args(argv)
    names, site = site_parameters()
    if args.only:
        unknown = [n for n in args.only if n not in names]
        if unknown:
            p.error(f"--only: unknown notebook(s) {', '.join(unknown)}; they are {', '.join(names)}")
        names = [n for n in names if n in args.only]
    if args.runs_dir.rstrip("/") == SITE_RUNS:
        p.error("--runs-dir runs/site would replace the course site's own runs; choose another folder")
    executed = Path(args.executed or tempfile.mkdtemp(prefix="siftkit_notebook_times_"))
    executed.mkdir(parents=True, exist_ok=True)
    runs_root = REPO / args.runs_dir
    print(
        f"{len(names)} notebooks; load {load()}, {busy_cores()} cores busy now; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(not set: the kit chooses)')}",
        flush=True,
    )
    rows, started = [], time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for name in names:
        row = run_notebook(
            name, parameters(name, site[name], args.runs_dir, args.params_file), executed, runs_root, args.cell_timeout
        )
        rows.append(row)
        print(
            f"{name}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, load {row['load_before'][0]} → "
            f"{row['load_after'][0]}, threads {threads_text(row)}",
            flush=True,
        )
    record = {
        "machine": machine(),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params_file": args.params_file,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "runs_dir": args.runs_dir,
        "executed": str(executed),
        "notebooks": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(table(rows))
    print(f"written: {args.out}; executed notebooks and logs in {executed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
