"""`python -m siftkit sweep`: algorithms x seeds, resumable, one process per run.

    python -m siftkit sweep --params params/twitter_to_uci.yaml --algos plain,smart,sift \
        --seeds 1-5 --output-dir results/cpu [--tag NAME] [--jobs N] [--<field> VALUE ...]
    python -m siftkit sweep --plan results/regime_study.plan --output-dir results/cpu --jobs 2

Each run goes to ``<output-dir>/<task>/<algo>[-<tag>]/seed<k>/``. A run whose results.json
exists is skipped, one with checkpoints is resumed, so a killed sweep continues where it
stopped. Every run is its own ``python -m siftkit train`` process: a crash, an OOM or a bad
setting fails that run only; the sweep reports it and goes on, and exits non-zero at the
end if any run failed. ``--jobs N`` runs N at once (useful on a GPU, where one small run
leaves the device mostly idle). Any RunConfig field can be set for all runs, as `train`
takes it (``--field value``, ``--field=value``, a bare ``--cpu``), e.g.
``--perturb_at word_embeddings --tag word_embeddings``. An algorithm or seed named twice is
run once.

A study of many variants is a *plan file*: one sweep per line (the options above, without
``--output-dir``/``--jobs``; ``#`` starts a comment). ``--plan FILE`` runs all its runs in one
pool, in file order, so the first lines finish first; ``--stop-after SECONDS`` starts no new
run after that time (running ones finish), for a machine lent for a fixed time.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from siftkit.checkpoint import list_checkpoints
from siftkit.cli import BOOL_FLAGS, join_negative_values, parse_field_value
from siftkit.config import ALGOS, SEED_MAX, RunConfig
from siftkit.results import RESULTS_FILE


def parse_seeds(text: str) -> list[int]:
    """'1-5' -> [1..5]; '1,3,7' -> [1, 3, 7]; '2-3,9' -> [2, 3, 9]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                _check_seed_range(text, lo, hi, len(seeds))  # before the range is expanded
                seeds.extend(range(lo, hi + 1))
            elif part:
                seeds.append(int(part))
    except _SeedRangeError:
        raise
    except ValueError:
        raise ValueError(f"--seeds must look like '1-5' or '1,3,7', got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"--seeds must name seeds >= 0, got {text!r}")
    return list(dict.fromkeys(seeds))


# More runs than any study plans: a typo such as 1-10000 is refused instead of validating
# (and listing) ten thousand runs.
MAX_SEEDS = 1000


class _SeedRangeError(ValueError):
    pass


def _check_seed_range(text: str, lo: int, hi: int, before: int) -> None:
    if hi > SEED_MAX:
        raise _SeedRangeError(f"--seeds {text!r}: seed {hi} is more than {SEED_MAX} (2**32 - 1, the largest seed numpy takes)")
    if before + hi - lo + 1 > MAX_SEEDS:
        raise _SeedRangeError(f"--seeds {text!r} names {before + hi - lo + 1} seeds; a sweep takes at most {MAX_SEEDS}")


def check_path_name(what: str, name: str) -> str:
    """`name` (a tag, or any name that becomes one part of a run's folder path) must stay one
    folder: no separator, no '..', nothing the file system would read otherwise; returns it.

    A tag such as ``x/../../../outside`` planned its runs outside the output root.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty name, got {name!r}")
    bad = [ch for ch in ("/", "\\", "\0") if ch in name]
    if bad or name in (".", "..") or name != name.strip() or any(not ch.isprintable() for ch in name):
        why = (f"it holds {', '.join(map(repr, bad))}" if bad else "it has spaces around it" if name != name.strip()
               else "it has an unprintable character" if any(not ch.isprintable() for ch in name)
               else "it names a folder above or at the output root")
        raise ValueError(f"{what} {name!r} cannot name a folder: {why}; use letters, digits, '.', '_' and '-' "
                         f"(e.g. {_safe_name(name)!r})")
    return name


def _safe_name(name: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name.strip()).strip("._")
    return safe or "variant"


def check_inside(root: Path, run_dir: Path) -> None:
    """A planned run folder must resolve inside the sweep's output root."""
    base, target = root.resolve(), run_dir.resolve()
    if base != target and base not in target.parents:
        raise ValueError(f"run folder {run_dir} resolves to {target}, outside the output root {base}")


def parse_algos(text: str) -> list[str]:
    """'plain,sift' -> ['plain', 'sift']; a repeated name is planned once (as seeds are)."""
    algos = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in algos if a not in ALGOS]
    if not algos or bad:
        raise ValueError(f"--algos must be a comma list of {', '.join(ALGOS)}; got {text!r}")
    return list(dict.fromkeys(algos))


@dataclass
class PlannedRun:
    algo: str
    seed: int
    run_dir: Path
    args: list[str]

    @property
    def done(self) -> bool:
        return (self.run_dir / RESULTS_FILE).is_file()


def plan(params: str | None, algos: list[str], seeds: list[int], output_dir: Path, tag: str | None,
         overrides: dict[str, str]) -> list[PlannedRun]:
    values = {k: parse_field_value(k, v) for k, v in overrides.items()}
    if tag is not None:
        check_path_name("--tag", tag)
    runs = []
    for algo in algos:
        for seed in seeds:
            # Validate every combination now, before hours of compute are spent, as the run
            # itself will build it (the overrides apply to this algorithm's defaults).
            cfg = RunConfig.from_yaml(params, **values, algo=algo, seed=seed)
            name = algo + (f"-{tag}" if tag else "")
            run_dir = output_dir / cfg.task / name / f"seed{seed}"
            check_inside(output_dir, run_dir)
            args = ["train", "--algo", algo, "--seed", str(seed), "--output_dir", str(run_dir)]
            if params:
                args += ["--params", params]
            for key, value in overrides.items():
                args.append(f"--{key}={value}")  # '=': a value such as -1e-3 is not an option
            if tag:
                args += ["--extra", json.dumps({"tag": tag})]
            runs.append(PlannedRun(algo, seed, run_dir, args))
    return runs


def run_one(run: PlannedRun, log_dir: Path) -> tuple[PlannedRun, int, float]:
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
        code = subprocess.call([sys.executable, "-m", "siftkit", *args], stdout=fh, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env=env)
    return run, code, time.time() - start


def _sweep_parser(prog: str = "siftkit sweep") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--params", default=None, help="YAML of RunConfig overrides")
    p.add_argument("--algos", default="plain,smart,sift", action=_Once)
    p.add_argument("--seeds", default="1-5", action=_Once)
    p.add_argument("--tag", default=None, help="variant name appended to the algo folder", action=_Once)
    return p


class _Once(argparse.Action):
    """An option that may be given once: argparse keeps the last of `--algos plain --algos sift`
    without a word, and the sweep would silently skip plain."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, f"_{self.dest}_given", False):
            raise ValueError(f"{option_string} given twice ({getattr(namespace, self.dest)!r}, then {values!r}); "
                             f"give it once" + (", as one comma list, e.g. " f"{option_string} "
                                                f"{getattr(namespace, self.dest)},{values}"
                                                if self.dest in ("algos", "seeds") else ""))
        setattr(namespace, f"_{self.dest}_given", True)
        setattr(namespace, self.dest, values)


def plan_file(path: str | Path, output_dir: Path) -> list[PlannedRun]:
    """Every run of a plan file, in file order; a bad line is an error naming its number."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"plan file not found: {path}")
    runs: list[PlannedRun] = []
    for number, line in enumerate(_plan_lines(path), start=1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:  # "No closing quotation"
            raise ValueError(f"{path} line {number}: {exc} ({line.strip()!r})") from None
        if not words:
            continue
        try:
            args, rest = _sweep_parser().parse_known_args(words)
            runs += plan(args.params, parse_algos(args.algos), parse_seeds(args.seeds), output_dir, args.tag,
                         _field_overrides(rest))
        except (ValueError, SystemExit) as exc:
            raise ValueError(f"{path} line {number}: {exc}") from None
    seen: dict[Path, int] = {}
    for r in runs:
        seen[r.run_dir] = seen.get(r.run_dir, 0) + 1
    twice = sorted(str(d) for d, n in seen.items() if n > 1)
    if twice:
        raise ValueError(f"{path} plans the same run more than once: {', '.join(twice)}")
    return runs


def _plan_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{path} line {line}: not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} at offset "
                         f"{exc.start}: {exc.reason}); save the plan file as UTF-8") from None


def main(argv: list[str] | None = None) -> int:
    p = _sweep_parser()
    p.add_argument("--plan", default=None, help="a file of sweeps, one per line (replaces --params/--algos/...)")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", required=True)
    p.add_argument("--jobs", type=int, default=1, help="runs at once")
    p.add_argument("--stop-after", type=float, default=None, help="start no new run after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    args, rest = p.parse_known_args(argv)
    if not args.output_dir.strip():  # an unset shell variable: the runs would land in the current folder
        raise ValueError(f"--output-dir is empty ({args.output_dir!r}); name the sweep's folder, e.g. results/cpu")
    if args.stop_after is not None and not args.stop_after > 0:  # also NaN
        raise ValueError(f"--stop-after must be a number of seconds > 0, got {args.stop_after:g}; leave it out "
                         f"to run every planned run")
    if args.plan is not None:
        if rest:
            raise ValueError(f"--plan takes the runs from the file; unexpected options {' '.join(rest)}")
        runs = plan_file(args.plan, Path(args.output_dir))
    else:
        overrides = _field_overrides(rest)
        runs = plan(args.params, parse_algos(args.algos), parse_seeds(args.seeds), Path(args.output_dir),
                    args.tag, overrides)
    todo = [r for r in runs if not r.done]
    print(f"sweep: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run", flush=True)
    if args.dry_run:
        for r in runs:
            print(("done  " if r.done else "todo  ") + str(r.run_dir))
        return 0
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    failed, not_started = [], []
    log_dir = Path(args.output_dir) / "logs"
    deadline = None if args.stop_after is None else time.time() + args.stop_after

    def attempt(run: PlannedRun):
        if deadline is not None and time.time() > deadline:
            return run, None, 0.0
        return run_one(run, log_dir)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for run, code, secs in pool.map(attempt, todo):
            if code is None:
                not_started.append(run)
                continue
            status = "ok" if code == 0 else f"FAILED (exit {code}; see {log_dir})"
            print(f"sweep: {run.run_dir} {status} in {secs:.0f} s", flush=True)
            if code != 0:
                failed.append(run)
    if not_started:
        print(f"sweep: {len(not_started)} run(s) not started (--stop-after {args.stop_after:g} s passed); "
              f"rerun the same command to do them", flush=True)
    if failed:
        print(f"sweep: {len(failed)} run(s) failed: " + ", ".join(str(r.run_dir) for r in failed), file=sys.stderr)
        return 1
    return 0


def _field_overrides(rest: list[str]) -> dict[str, str]:
    """RunConfig fields given to every run, written as `train` takes them: `--field value`,
    `--field=value`, a negative number (`--adv_epsilon -1e-3`) and a bare boolean (`--cpu`)."""
    overrides: dict[str, str] = {}
    fields = set(RunConfig.field_names())
    rest = join_negative_values(rest)
    i = 0
    while i < len(rest):
        key, glued, value = rest[i].partition("=")
        name = key[2:]
        if not key.startswith("--") or name not in fields:
            raise ValueError(f"unknown sweep option or field {rest[i]!r}; fields are set as --<field> <value>")
        if name in {"algo", "seed", "output_dir"}:
            raise ValueError(f"{key} is set by the sweep itself (use --algos, --seeds, --output-dir)")
        if glued:
            i += 1
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            value, i = rest[i + 1], i + 2
        elif name in BOOL_FLAGS:
            value, i = "true", i + 1
        else:
            raise ValueError(f"{key} needs a value: --{name} <value>")
        overrides[name] = value
    return overrides
