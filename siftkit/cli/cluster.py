"""A sweep's runs as a numbered list, for a cluster: one entry per Slurm array task, or submitit.

    siftkit sweep --plan P --output-dir O --list            # index, output folder, command
    siftkit sweep --plan P --output-dir O --index 7         # run entry 7 (a Slurm array task)
    siftkit sweep --plan P --output-dir O --shard 2/8       # entries 2, 10, 18, ... in the pool
    siftkit sweep --plan P --output-dir O --launcher submitit --slurm-partition gpu --slurm-parallel 8

The list is the plan in its own order (lines of the file, then algorithms, then seeds, as
written), never a dict's or the file system's, so entry I is the same run on every machine
and in every call. Entry I runs exactly as the local pool runs it (`siftkit.cli.launch.run_one`):
its own ``python -m siftkit train`` process, skipped when its results.json exists, resumed
(``--resume``) when it has checkpoints, so a preempted or requeued task continues where it
stopped. A run that waits for other runs (``waiting``) exits with `EXIT_WAITING` when asked for
by ``--index``, so the array task can be tried again once those are done.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from siftkit.cli.launch import run_one

# EX_TEMPFAIL of sysexits.h: "try again later". A Slurm task that gets it retries (see
# scripts/slurm_array.sbatch); any other non-zero code is a failed run.
EXIT_WAITING = 75


def waiting(run) -> str | None:
    """Why `run` cannot start yet (it needs other runs' results), or None."""
    reason = getattr(run, "waiting", None)
    if not reason:
        return None
    return reason if isinstance(reason, str) else "it needs the results of runs that have not finished"


def parse_shard(text: str) -> tuple[int, int]:
    """'2/8' -> (2, 8): entries 2, 10, 18, ... of the list (0 <= i < N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if n < 1:
        raise ValueError(f"--shard {text}: N (the number of shards) must be >= 1, got {n}")
    if not 0 <= i < n:
        raise ValueError(
            f"--shard {text}: need 0 <= i < N (shards are counted from 0: i is one of 0-{n - 1} here), got i={i}"
        )
    return i, n


def join_option_values(argv: Sequence[str], options: Sequence[str] = ("--shard", "--index")) -> list[str]:
    """`--shard -1/2` -> `--shard=-1/2`: argparse takes a value starting with '-' for an option
    and says only "expected one argument"; glued, the value reaches the check that names it."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in options and i + 1 < len(argv) and argv[i + 1][:1] == "-" and argv[i + 1][1:2].isdigit():
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def select(runs: Sequence, index: int | None = None, shard: str | None = None) -> list[tuple[int, Any]]:
    """The (index, run) entries asked for: all, entry `index`, or shard ``i/N``.

    A shard takes every N-th entry (strided, not a block) so that each shard gets its share
    of the plan's first lines, which a plan file puts first because they matter most.
    """
    entries = list(enumerate(runs))
    if index is not None and shard is not None:
        raise ValueError("--index and --shard both choose the runs; give one of them")
    if index is not None:
        if not 0 <= index < len(entries):
            span = f"0-{len(entries) - 1}" if entries else "none"
            raise ValueError(
                f"--index {index} is out of range: the plan has {len(entries)} run(s) (indices {span}; see --list)"
            )
        return [entries[index]]
    if shard is not None:
        i, n = parse_shard(shard)
        return entries[i::n]
    return entries


def command(run) -> str:
    """The exact command that runs `run` (``--resume`` is added when it has checkpoints)."""
    return shlex.join(["python", "-m", "siftkit", *run.args])


def dependencies(run) -> dict[str, str]:
    """The files an entry's command reads besides the data (its ``--params`` files), each with the
    first 12 hex digits of its sha256: what `--index` compares with the list."""
    import hashlib

    args = list(getattr(run, "args", None) or [])
    files = [args[k + 1] for k, a in enumerate(args[:-1]) if a == "--params"]
    files += [a.split("=", 1)[1] for a in args if a.startswith("--params=")]
    out = {}
    for f in files:
        try:
            out[f] = hashlib.sha256(Path(f).read_bytes()).hexdigest()[:12]
        except OSError:
            out[f] = "missing"
    return out


def format_list(entries: Sequence[tuple[int, Any]]) -> str:
    """One line per entry: index, output folder and command, tab-separated, then the files the
    command reads (``# depends: params.yaml@<sha256[:12]>``) where it names any. A run whose
    settings are not known yet (it waits for a grid's choice) shows why in place of a command;
    a finished one is marked done."""

    def what(run) -> str:
        if getattr(run, "done", False) and not run.args:
            return "# done"
        reason = waiting(run)
        return f"# waiting: {reason}" if reason else command(run)

    def depends(run) -> str:
        found = dependencies(run)
        return "\t# depends: " + " ".join(f"{f}@{sha}" for f, sha in found.items()) if found else ""

    return "\n".join(f"{i}\t{run.run_dir}\t{what(run)}{depends(run)}" for i, run in entries)


LIST_FILE = "sweep-list.tsv"  # --list's output, kept in the output folder for --index to compare with


def record_list(output_dir: Path, plan_id: str, text: str) -> Path:
    """Keep what --list printed (with the plan it lists) beside the runs."""
    from siftkit.run.records import atomic_write_text

    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LIST_FILE
    atomic_write_text(
        path, f"# siftkit sweep --list of {plan_id} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n" + text + "\n"
    )
    return path


def check_unchanged(output_dir: Path, plan_id: str, index: int, now: str) -> None:
    """Refuse to run entry `index` when it is not what --list listed for this plan: a params file
    edited since, or a plan whose entries moved. Nothing to compare without a list (or with the
    list of another plan)."""
    path = output_dir / LIST_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    if not lines or not lines[0].startswith(f"# siftkit sweep --list of {plan_id} at "):
        return
    listed_at = lines[0].rsplit(" at ", 1)[1]
    then = next((line for line in lines[1:] if line.split("\t", 1)[0] == str(index)), None)
    if then is None:
        return
    was, are = then.split("\t"), now.split("\t")
    changes = []
    if was[1] != are[1]:
        changes.append(f"its folder was {was[1]}, now {are[1]}")
    elif not was[2].startswith("#") and not are[2].startswith("#") and was[2] != are[2]:
        changes.append("its command changed")
    old_deps = _parse_depends(was[3] if len(was) > 3 else "")
    new_deps = _parse_depends(are[3] if len(are) > 3 else "")
    for f in sorted(set(old_deps) & set(new_deps)):
        if old_deps[f] != new_deps[f]:
            changes.append(f"{f} now has sha256 {new_deps[f]}..., listed with {old_deps[f]}...")
    if changes:
        raise ValueError(
            f"--index {index}: the entry is not what --list listed at {listed_at} ({path}): "
            f"{'; '.join(changes)}; list the plan again (--list) and resubmit the array, or restore "
            f"what changed"
        )


def _parse_depends(column: str) -> dict[str, str]:
    words = column.removeprefix("# depends: ").split() if column.startswith("# depends: ") else []
    return dict(w.rsplit("@", 1) for w in words if "@" in w)


def run_entry(index: int, run, log_dir: Path) -> int:
    """Run one entry as the pool would; the exit code for the array task."""
    if run.done:
        print(f"sweep: entry {index} {run.run_dir} is already done", flush=True)
        return 0
    reason = waiting(run)
    if reason is not None:
        print(
            f"sweep: entry {index} {run.run_dir} is waiting: {reason}; try it again later (exit {EXIT_WAITING})",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_WAITING
    _, code, secs = run_one(run, log_dir)
    status = "ok" if code == 0 else f"FAILED (exit {code}; see {log_dir})"
    print(f"sweep: entry {index} {run.run_dir} {status} in {secs:.0f} s", flush=True)
    return code


# ----------------------------------------------------------------------------- submitit


def add_submitit_options(p: argparse.ArgumentParser) -> None:
    """The Slurm options of ``--launcher submitit`` (each one task = one run)."""
    g = p.add_argument_group("--launcher submitit")
    g.add_argument(
        "--launcher",
        choices=("pool", "submitit"),
        default="pool",
        help="pool: run here (--jobs at once); submitit: one job per run through submitit",
    )
    g.add_argument(
        "--submitit-cluster",
        choices=("auto", "slurm", "local"),
        default="auto",
        help="auto: Slurm where sbatch exists, else this machine (submitit's local executor)",
    )
    g.add_argument(
        "--submitit-folder", default=None, help="submitit's job files and logs (default OUTPUT_DIR/submitit)"
    )
    g.add_argument("--slurm-partition", default=None, help="Slurm partition (sbatch --partition)")
    g.add_argument("--slurm-account", default=None, help="Slurm account to charge (sbatch --account)")
    g.add_argument("--slurm-qos", default=None, help="Slurm quality of service (sbatch --qos)")
    g.add_argument("--slurm-constraint", default=None, help="Slurm node features (sbatch --constraint)")
    g.add_argument(
        "--slurm-time",
        type=int,
        default=240,
        help="minutes a run may take (the local executor's limit too; its own default is 2)",
    )
    g.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per run")
    g.add_argument("--slurm-cpus", type=int, default=4, help="CPU cores per run")
    g.add_argument("--slurm-mem-gb", type=float, default=32, help="memory per run in GB (default: 32)")
    g.add_argument(
        "--slurm-parallel", type=int, default=None, metavar="K", help="at most K runs at once (the array's %%K)"
    )
    g.add_argument("--wait", action="store_true", help="wait for the jobs and report each (always with local)")


def _executor(args: argparse.Namespace):
    try:
        import submitit
    except ImportError:
        raise ValueError('--launcher submitit needs submitit: python -m pip install "siftkit[cluster]"') from None
    folder = Path(args.submitit_folder or Path(args.output_dir) / "submitit") / "%j"
    cluster = None if args.submitit_cluster == "auto" else args.submitit_cluster
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    for name in ("slurm_time", "slurm_cpus", "slurm_mem_gb", "slurm_parallel"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.slurm_gpus < 0:
        raise ValueError(f"--slurm-gpus must be >= 0, got {args.slurm_gpus}")
    slurm = {k: getattr(args, f"slurm_{k}") for k in ("partition", "account", "qos", "constraint")}
    executor.update_parameters(
        name="siftkit",
        timeout_min=args.slurm_time,
        gpus_per_node=args.slurm_gpus,
        cpus_per_task=args.slurm_cpus,
        mem_gb=args.slurm_mem_gb,
        tasks_per_node=1,
        nodes=1,
        **{f"slurm_{k}": v for k, v in slurm.items() if v is not None},
        **({"slurm_array_parallelism": args.slurm_parallel} if args.slurm_parallel else {}),
    )
    return executor


def _job_class():
    """The job submitit runs: one entry. Checkpointable: on preemption or timeout submitit
    requeues it with the same arguments, and the entry resumes from its checkpoint."""
    import submitit

    class SweepEntry(submitit.helpers.Checkpointable):
        def __call__(self, index: int, run, log_dir: str) -> int:
            code = run_entry(index, run, Path(log_dir))
            if code != 0:
                raise RuntimeError(f"entry {index} {run.run_dir} exited {code} (see {log_dir})")
            return code

    return SweepEntry


def submit(args: argparse.Namespace, entries: Sequence[tuple[int, Any]]) -> int:
    """Submit the entries that are not done, one job each (a job array on Slurm)."""
    executor = _executor(args)
    todo = [(i, r) for i, r in entries if not r.done]
    print(f"sweep: submitting {len(todo)} run(s) through submitit ({executor.cluster})", flush=True)
    if not todo:
        return 0
    log_dir = str(Path(args.output_dir) / "logs")
    job = _job_class()()
    ready = [(i, r) for i, r in todo if waiting(r) is None]
    later = [(i, r) for i, r in todo if waiting(r) is not None]
    # submitit's local executor starts processes that outlive this one: always wait for them.
    wait = args.wait or executor.cluster != "slurm"
    jobs = _submit_array(executor, job, ready, log_dir)
    failed = _wait(jobs, ready) if wait else 0
    if later:
        # Runs that wait for others: a second array, started once the first has finished
        # (on Slurm without --wait, through a dependency on the first array).
        if not wait and jobs:
            first = sorted({j.job_id.split("_")[0] for j in jobs})
            executor.update_parameters(slurm_additional_parameters={"dependency": "afterany:" + ":".join(first)})
        later_jobs = _submit_array(executor, job, later, log_dir)
        failed += _wait(later_jobs, later) if wait else 0
    if not wait:
        print(
            f"sweep: submitted; follow with squeue (job files in {Path(str(executor.folder)).parent}, "
            f"run logs in {log_dir})",
            flush=True,
        )
    elif failed:
        print(f"sweep: {failed} run(s) failed", file=sys.stderr, flush=True)
    return 1 if failed else 0


def _submit_array(executor, job, entries, log_dir: str) -> list:
    if not entries:
        return []
    with executor.batch():
        jobs = [executor.submit(job, i, r, log_dir) for i, r in entries]
    for (i, r), j in zip(entries, jobs):
        print(f"sweep: entry {i} {r.run_dir} -> job {j.job_id}", flush=True)
    return jobs


def _wait(jobs: list, entries: Sequence[tuple[int, Any]]) -> int:
    """Wait for every job; print each outcome; the number that failed."""
    failed = 0
    for job, (i, run) in zip(jobs, entries):
        start = time.time()
        try:
            job.result()
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's error, whatever it was
            failed += 1
            status = f"FAILED ({str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__})"
        print(
            f"sweep: entry {i} {run.run_dir} {status} (job {job.job_id}, waited {time.time() - start:.0f} s)",
            flush=True,
        )
    return failed
