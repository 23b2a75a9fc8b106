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

Equal tuning budgets: ``--grid FIELD=V1,V2,...`` (repeatable: the cross product, first option
outermost) runs every algorithm at every grid point on the same seeds; it needs ``--tag``. Each
point is its own variant, tag ``<tag>__<field><value>_...`` (floats written with ``:g``), in
``<output-dir>/<task>/<algo>-<tag>__<label>/seed<k>/``; its ``extra`` records the tag, the arm
(``<algo>-<tag>``), the point (``grid``, typed values), its position in grid order
(``grid_index``) and the metric that chooses (``select_on``). ``--select-on METRIC`` names that
validation metric (default ``uci_val_accuracy`` for twitter_to_uci, which needs
``--uci_val_size``, and ``in_domain_dev_mcc`` for cola); a test metric is refused: nothing
selects on one. ``--then-seeds SEEDS`` runs more seeds at the chosen point (highest mean
``select_on`` over the grid's seeds, the first point on a tie, `siftkit.study.select.select_point`) in
``<algo>-<tag>__chosen/seed<k>/`` with the chosen point's ``extra`` plus ``"chosen": true``. Until
every grid run of that algorithm has its results.json such a run *waits* (``--dry-run`` shows
``wait`` and how many grid runs are missing); the sweep runs everything runnable, plans again and
runs what became runnable, so one sweep does the grid and then the extra seeds. A grid run that
failed leaves its chosen-point runs waiting, and the sweep exits non-zero. The run list is a fixed
function of the plan: file order, then algorithm, grid point, seed, each algorithm's
chosen-point runs after its grid runs.

On a cluster (`siftkit.cli.cluster`): ``--list`` prints the runs as a numbered list (index,
output folder, command), the same on every machine; ``--index I`` runs entry I (one Slurm
array task, scripts/slurm_array.sbatch), ``--shard i/N`` entries i, i+N, ... in the pool,
and ``--launcher submitit`` submits one job per run through submitit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from siftkit.cli import cluster
from siftkit.cli.args import check_option_spelling, config_parser, field_overrides, parse_field_value, protocols_text
from siftkit.cli.launch import run_one
from siftkit.data.shift_spec import folder_name, parse_spec
from siftkit.data.shift_spec import select_on as shift_select_on
from siftkit.run.config import ALGOS, SEED_MAX, RunConfig, _coerce
from siftkit.run.outdir import finished
from siftkit.study.runs import load_run
from siftkit.study.select import DEFAULT_SELECT_ON, check_select_on, format_grid_value, grid_label, select_point


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
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
        raise ValueError(f"{option} must look like '1-5' or '1,3,7', got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"{option} must name seeds >= 0, got {text!r}")
    return list(dict.fromkeys(seeds))


# More runs than any study plans: a typo such as 1-10000 is refused instead of validating
# (and listing) ten thousand runs.
MAX_SEEDS = 1000


class _SeedRangeError(ValueError):
    pass


def _check_seed_range(text: str, lo: int, hi: int, before: int) -> None:
    if hi > SEED_MAX:
        raise _SeedRangeError(
            f"--seeds {text!r}: seed {hi} is more than {SEED_MAX} (2**32 - 1, the largest seed numpy takes)"
        )
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
        why = (
            f"it holds {', '.join(map(repr, bad))}"
            if bad
            else "it has spaces around it"
            if name != name.strip()
            else "it has an unprintable character"
            if any(not ch.isprintable() for ch in name)
            else "it names a folder above or at the output root"
        )
        raise ValueError(
            f"{what} {name!r} cannot name a folder: {why}; use letters, digits, '.', '_' and '-' "
            f"(e.g. {_safe_name(name)!r})"
        )
    return name


def _safe_name(name: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name.strip()).strip("._")
    return safe or "variant"


def check_name_lengths(root: Path, run_dir: Path) -> None:
    """Each folder name of a run's path must fit the file system (NAME_MAX, 255 bytes on most),
    and the whole path PATH_MAX: a 300-character --tag planned (and --dry-run listed) runs that
    then failed with "File name too long"."""
    import os

    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for part in run_dir.relative_to(root).parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise ValueError(
                f"run folder name {part[:40]!r}... is {size} bytes long, more than the {name_max} a "
                f"folder name may have here; shorten the --tag (or the grid values)"
            )
    size = len(os.fsencode(str(run_dir.resolve())))
    if size > path_max:
        raise ValueError(
            f"run folder {str(run_dir)[:60]!r}... is a path of {size} bytes, more than the {path_max} "
            f"the system takes; choose a shorter --output-dir or --tag"
        )


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
    # Why the run cannot start yet (a chosen-point run whose grid is not finished), else None.
    waiting: str | None = None
    # The RunConfig the plan built to check the run (None for chosen-point runs); not compared.
    config: RunConfig | None = field(default=None, repr=False, compare=False)
    # A grid run's arm, its point (field -> value as written in the plan), the point's index in
    # grid order and the metric that chooses: what `--at-chosen ARM` reads.
    arm: str | None = field(default=None, compare=False)
    point: dict[str, str] | None = field(default=None, compare=False)
    point_index: int | None = field(default=None, compare=False)
    select_on: str | None = field(default=None, compare=False)

    @property
    def done(self) -> bool:
        return finished(self.run_dir)

    @property
    def runnable(self) -> bool:
        return not self.done and self.waiting is None


# Fields a grid may not vary: the sweep sets them itself, or they decide which runs are ever
# compared (an arm whose points differ in task, model or device would be split across groups).
NOT_GRIDDED = {
    "algo": "set by --algos",
    "seed": "set by --seeds",
    "output_dir": "set by --output-dir",
    "extra": "written by the sweep",
    "task": "runs of two tasks are never compared",
    "shift": "runs of two shift specs are never compared",
    "model_name": "runs of two models are never compared",
    "cpu": "runs of two devices are never compared",
    "mixed_precision": "runs of two devices are never compared",
    "wise_ft_alphas": "a list: WiSE-FT chooses among its alphas inside each run",
}
# Characters a grid label may hold: it names the run's folder.
_LABEL = re.compile(r"[A-Za-z0-9._+:=-]+")


def parse_grid(texts: list[str], overrides: dict[str, str]) -> list[tuple[str, list[str], list]]:
    """``--grid FIELD=V1,V2`` options -> [(field, value texts, typed values)], in the order given."""
    axes: list[tuple[str, list[str], list]] = []
    for text in texts:
        name, eq, values = text.partition("=")
        name = name.strip()
        words = [v.strip() for v in values.split(",")]
        if not eq or not name or not all(words):
            raise ValueError(f"--grid must look like FIELD=V1,V2,... (e.g. learning_rate=2e-5,1e-4), got {text!r}")
        _check_grid_field(name, overrides, [a[0] for a in axes])
        axes.append((name, words, _grid_values(name, words)))
    return axes


def _check_grid_field(name: str, overrides: dict[str, str], earlier: list[str]) -> None:
    fields = RunConfig.input_names()  # a method's own knob (FreeLB's adv_lr, ...) is gridded by its name
    if name not in fields:
        raise ValueError(f"--grid {name}: not a RunConfig field or method knob; they are {', '.join(sorted(fields))}")
    if name in NOT_GRIDDED:
        raise ValueError(f"--grid {name}: this field cannot be gridded ({NOT_GRIDDED[name]})")
    if name in overrides:
        raise ValueError(f"--grid {name} is also set as a fixed --{name} {overrides[name]}; give it one way")
    if name in earlier:
        raise ValueError(f"--grid {name} is given twice; list all its values in one --grid {name}=V1,V2,...")


def _grid_values(name: str, words: list[str]) -> list:
    """The values as RunConfig stores them (floats as floats, booleans, None): ``extra.grid``
    records them typed, and their labels must name distinct run folders."""
    hint = RunConfig.input_type(name)
    try:
        typed = [_coerce(name, parse_field_value(name, w), hint) for w in words]
    except ValueError as exc:
        raise ValueError(f"--grid {name}: {exc}") from None
    labels = [format_grid_value(v) for v in typed]
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if twice:
        raise ValueError(
            f"--grid {name} lists {', '.join(twice)} more than once (as run names: values are written with :g)"
        )
    bad = [w for w, lab in zip(words, labels) if not _LABEL.fullmatch(lab)]
    if bad:
        raise ValueError(
            f"--grid {name}: value {bad[0]!r} cannot name a run folder (letters, digits and . _ + : = - only)"
        )
    return typed


def plan(
    params: str | None,
    algos: list[str],
    seeds: list[int],
    output_dir: Path,
    tag: str | None,
    overrides: dict[str, str],
    *,
    grid: list[str] | None = None,
    select_on: str | None = None,
    then_seeds: list[int] | None = None,
) -> list[PlannedRun]:
    """The runs of one sweep: per algo its seeds; with `grid`, per algo every grid point (the
    cross product, first --grid outermost) x seeds, then its `then_seeds` chosen-point runs."""
    if tag is not None:
        check_path_name("--tag", tag)
    if not grid:
        if select_on is not None or then_seeds:
            raise ValueError(
                "--select-on and --then-seeds choose among the points of a --grid; add --grid FIELD=V1,V2,..."
            )
        return [
            _planned(
                params,
                algo,
                seed,
                output_dir,
                algo + (f"-{tag}" if tag else ""),
                overrides,
                {"tag": tag} if tag else None,
            )
            for algo in algos
            for seed in seeds
        ]
    if not tag:
        raise ValueError(
            "--grid needs --tag: each grid point runs as <algo>-<tag>__<point>, and the arm "
            "(all points of one algo) is <algo>-<tag>"
        )
    axes = parse_grid(grid, overrides)
    then_seeds = list(then_seeds or [])
    again = sorted(set(then_seeds) & set(seeds))
    if again:
        raise ValueError(
            f"--then-seeds repeats --seeds seed(s) {', '.join(map(str, again))}: the grid runs "
            f"those at every point; give new seeds"
        )
    first = _config(params, overrides, algos[0], seeds[0])
    task = folder_name(first)
    if first.task == "shift":
        metric = shift_select_on(select_on, parse_spec(first.shift))
    else:
        metric = check_select_on(select_on or DEFAULT_SELECT_ON[task], task)
    points = [
        [(name, words[i], typed[i]) for (name, words, typed), i in zip(axes, idx)]
        for idx in itertools.product(*(range(len(words)) for _, words, _ in axes))
    ]
    runs: list[PlannedRun] = []
    for algo in algos:
        cells = []
        for index, point in enumerate(points):
            grid_values = {name: value for name, _, value in point}
            full_tag = f"{tag}__{grid_label(grid_values)}"
            extra = {
                "tag": full_tag,
                "arm": f"{algo}-{tag}",
                "grid": grid_values,
                "grid_index": index,
                "select_on": metric,
            }
            point_overrides = {**overrides, **{name: text for name, text, _ in point}}
            cell = [
                _planned(params, algo, seed, output_dir, f"{algo}-{full_tag}", point_overrides, extra) for seed in seeds
            ]
            for run in cell:
                _check_validation_set(metric, select_on is None, run.config)
                run.arm, run.point, run.point_index, run.select_on = (
                    f"{algo}-{tag}",
                    {name: text for name, text, _ in point},
                    index,
                    metric,
                )
            cells.append((cell, point_overrides, extra))
        runs += [r for cell, _, _ in cells for r in cell]
        runs += [
            _chosen_run(cells, params, algo, seed, output_dir / task / f"{algo}-{tag}__chosen" / f"seed{seed}", metric)
            for seed in then_seeds
        ]
    return runs


def _config(params: str | None, overrides: dict[str, str], algo: str, seed: int) -> RunConfig:
    return RunConfig.from_yaml(
        params, **{k: parse_field_value(k, v) for k, v in overrides.items()}, algo=algo, seed=seed
    )


# Where a sweep's runs share their finished stages, under the output root (`--stage_cache_dir`
# in a plan line or on the command line replaces it; `none` turns it off).
STAGE_CACHE = ".stage_cache"


def _train_args(
    params: str | None, algo: str, seed: int, run_dir: Path, overrides: dict[str, str], extra: dict | None
) -> list[str]:
    args = ["train", "--algo", algo, "--seed", str(seed), "--output_dir", str(run_dir)]
    for one in [params] if isinstance(params, str) else params or []:
        args += ["--params", str(one)]
    if "stage_cache_dir" not in overrides:
        # run_dir is <output root>/<task>/<variant>/seed<k>: one cache for the whole sweep.
        args.append(f"--stage_cache_dir={run_dir.parents[2] / STAGE_CACHE}")
    for key, value in overrides.items():
        args.append(f"--{key}={value}")  # '=': a value such as -1e-3 is not an option
    if extra:
        args += ["--extra", json.dumps(extra)]
    return args


def _planned(
    params: str | None, algo: str, seed: int, output_dir: Path, name: str, overrides: dict[str, str], extra: dict | None
) -> PlannedRun:
    """One run into ``<output_dir>/<task>/<name>/seed<k>``. Its RunConfig is built now, as the
    run will build it, so a bad combination is an error before hours of compute are spent (the
    overrides apply to this algorithm's defaults)."""
    cfg = _config(params, overrides, algo, seed)
    run_dir = output_dir / folder_name(cfg) / name / f"seed{seed}"
    check_inside(output_dir, run_dir)
    check_name_lengths(output_dir, run_dir)
    return PlannedRun(algo, seed, run_dir, _train_args(params, algo, seed, run_dir, overrides, extra), config=cfg)


def _check_validation_set(metric: str, default: bool, cfg: RunConfig) -> None:
    """P2's UCI validation metrics exist only when the run holds out UCI validation sentences."""
    if metric.startswith("uci_val") and (getattr(cfg, "uci_val_size", 0) or 0) == 0:
        why = "the default for twitter_to_uci" if default else "its --select-on"
        raise ValueError(
            f"--grid chooses on {metric} ({why}), but uci_val_size is 0: P2 then holds out no UCI "
            f"validation sentences; set --uci_val_size (e.g. 300), or name another validation "
            f"metric with --select-on"
        )


def _chosen_run(
    cells: list[tuple[list[PlannedRun], dict[str, str], dict]],
    params: str | None,
    algo: str,
    seed: int,
    run_dir: Path,
    metric: str,
) -> PlannedRun:
    """A `--then-seeds` run: its folder is fixed at plan time; it takes the chosen point's
    settings (and its full tag, so summarize pools it with that point) once every grid run of
    this algo has its results.json. Until then it waits."""
    if finished(run_dir):
        return PlannedRun(algo, seed, run_dir, [])
    runs = [r for cell, _, _ in cells for r in cell]
    missing = sum(1 for r in runs if not r.done)
    if missing:
        return PlannedRun(algo, seed, run_dir, [], waiting=f"{missing} of {len(runs)} grid runs not finished")
    chosen = _chosen_cell([cell for cell, _, _ in cells], metric)
    if chosen is None:
        return PlannedRun(
            algo, seed, run_dir, [], waiting=f"no grid point can be chosen: every point lacks {metric} for some seed"
        )
    _, overrides, extra = cells[chosen]
    args = _train_args(params, algo, seed, run_dir, overrides, {**extra, "chosen": True})
    return PlannedRun(algo, seed, run_dir, args)


def _chosen_cell(cells: list[list[PlannedRun]], metric: str) -> int | None:
    """The index of the grid point (its finished runs, in grid order) chosen on `metric`
    (`siftkit.study.select.select_point`), or None when no point can be chosen."""
    return select_point([{r.seed: load_run(r.run_dir).metric(metric) for r in cell} for cell in cells])["chosen"]


def _at_chosen_runs(
    args: argparse.Namespace, output_dir: Path, rest: list[str], earlier: list[PlannedRun]
) -> list[PlannedRun]:
    """``--at-chosen ARM``: this line's runs take the point that ARM's grid (an earlier line of the
    plan) chose on validation — a control at tuned plain's learning rate, say. Until every grid
    run of ARM has its results.json they wait; their folders are ``<algo>-<tag>/seed<k>`` from the
    start, and their ``extra`` records the arm and the values taken (``at_chosen``)."""
    if not args.tag:
        raise ValueError("--at-chosen needs --tag (the variant's name, e.g. reinit_head)")
    check_path_name("--tag", args.tag)
    arm_runs = [r for r in earlier if r.arm == args.at_chosen]
    if not arm_runs:
        arms = sorted({r.arm for r in earlier if r.arm})
        raise ValueError(
            f"--at-chosen {args.at_chosen}: no earlier line of the plan has a grid arm of that name "
            f"(arms so far: {', '.join(arms) or 'none'}); an arm is <algo>-<tag> of a --grid line"
        )
    overrides = field_overrides(rest)
    point_fields = list(arm_runs[0].point)
    both = [f for f in point_fields if f in overrides]
    if both:
        raise ValueError(
            f"--at-chosen {args.at_chosen} sets {', '.join(both)} from its chosen point; do not also give --{both[0]}"
        )
    cells: dict[int, list[PlannedRun]] = {}
    for r in arm_runs:
        cells.setdefault(r.point_index, []).append(r)
    missing = sum(1 for r in arm_runs if not r.done)
    metric = arm_runs[0].select_on
    chosen = None
    if not missing:
        index = _chosen_cell([cells[i] for i in sorted(cells)], metric)
        chosen = None if index is None else cells[sorted(cells)[index]][0].point
    if args.grid:
        return _grid_at_chosen(args, output_dir, overrides, arm_runs, chosen, missing, metric)
    runs = []
    for algo in parse_algos(args.algos):
        for seed in parse_seeds(args.seeds):
            # Checked now with the first point's values (every point passed the grid line's checks).
            run = _planned(
                args.params,
                algo,
                seed,
                output_dir,
                f"{algo}-{args.tag}",
                {**overrides, **(chosen or arm_runs[0].point)},
                None,
            )
            if run.done:
                runs.append(PlannedRun(algo, seed, run.run_dir, []))
            elif missing:
                runs.append(
                    PlannedRun(
                        algo,
                        seed,
                        run.run_dir,
                        [],
                        waiting=f"{missing} of {len(arm_runs)} grid runs of {args.at_chosen} not finished",
                    )
                )
            elif chosen is None:
                runs.append(
                    PlannedRun(
                        algo,
                        seed,
                        run.run_dir,
                        [],
                        waiting=f"{args.at_chosen}: no grid point can be "
                        f"chosen (every point lacks {metric} for some seed)",
                    )
                )
            else:
                extra = {"tag": args.tag, "at_chosen": {"arm": args.at_chosen, "point": chosen, "select_on": metric}}
                run.args = _train_args(args.params, algo, seed, run.run_dir, {**overrides, **chosen}, extra)
                runs.append(run)
    return runs


def _grid_at_chosen(
    args: argparse.Namespace,
    output_dir: Path,
    overrides: dict[str, str],
    arm_runs: list[PlannedRun],
    chosen: dict[str, str] | None,
    missing: int,
    metric: str,
) -> list[PlannedRun]:
    """``--grid`` with ``--at-chosen``: a grid of its own (L2-SP's weight, say) run at the point the
    other arm chose. Planned with the first point's values while that arm is unfinished (the run
    folders are the grid's own and do not depend on the choice); every run waits until then."""
    own = [text.partition("=")[0].strip() for text in args.grid]
    both = sorted(set(own) & set(arm_runs[0].point))
    if both:
        raise ValueError(f"--grid {both[0]} is what --at-chosen {args.at_chosen} chooses; grid another field")
    runs = plan(
        args.params,
        parse_algos(args.algos),
        parse_seeds(args.seeds),
        output_dir,
        args.tag,
        {**overrides, **(chosen or arm_runs[0].point)},
        grid=args.grid,
        select_on=args.select_on,
        then_seeds=parse_seeds(args.then_seeds, "--then-seeds") if args.then_seeds is not None else None,
    )
    if chosen is None:
        why = (
            f"{missing} of {len(arm_runs)} grid runs of {args.at_chosen} not finished"
            if missing
            else f"{args.at_chosen}: no grid point can be chosen (every point lacks {metric} for some seed)"
        )
        return [
            PlannedRun(
                r.algo,
                r.seed,
                r.run_dir,
                [],
                waiting=None if r.done else why,
                arm=r.arm,
                point=r.point,
                point_index=r.point_index,
                select_on=r.select_on,
            )
            for r in runs
        ]
    taken = {"arm": args.at_chosen, "point": chosen, "select_on": metric}
    for r in runs:
        if "--extra" in r.args:
            i = r.args.index("--extra") + 1
            r.args[i] = json.dumps({**json.loads(r.args[i]), "at_chosen": taken})
    return runs


def _sweep_description() -> str:
    return "\n\n".join(
        [
            (
                "Run methods x seeds, one `siftkit train` process per run, into <output-dir>/<task>/<algo>[-<tag>]/seed<k>/;\n"
                "a finished run (its results.json) is skipped, one with checkpoints resumed."
            ),
            "protocols (--task, as train takes it):\n" + protocols_text(),
            (
                "Any RunConfig field or method knob is set for every run as train takes it (--<field> VALUE,\n"
                "--<field>=VALUE, a bare boolean such as --cpu); see `python -m siftkit train --help` and docs/config.md."
            ),
        ]
    )


def _sweep_parser(prog: str = "siftkit sweep") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=_sweep_description(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--params",
        action="append",
        default=None,
        metavar="YAML",
        help="YAML of RunConfig overrides (several: merged in order)",
    )
    p.add_argument(
        "--algos",
        default="plain,smart,sift",
        action=_Once,
        metavar="A,B,...",
        help=f"the methods to run, comma-separated, each name once: any of {', '.join(ALGOS)} "
        f"(default: plain,smart,sift)",
    )
    p.add_argument(
        "--seeds",
        default="1-5",
        action=_Once,
        metavar="SEEDS",
        help=f"the seeds of every method: a range 1-5, a list 1,3,7, or both 2-3,9 (at most {MAX_SEEDS}; default: 1-5)",
    )
    p.add_argument("--tag", default=None, help="variant name appended to the algo folder", action=_Once)
    p.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="FIELD=V1,V2,...",
        help="run every value of a RunConfig field (repeat for the cross product); needs --tag",
    )
    p.add_argument(
        "--select-on",
        "--select_on",
        dest="select_on",
        default=None,
        metavar="METRIC",
        help="validation metric that chooses the grid point (default: uci_val_accuracy for "
        "twitter_to_uci, in_domain_dev_mcc for cola); never a test metric",
    )
    p.add_argument(
        "--then-seeds",
        "--then_seeds",
        dest="then_seeds",
        default=None,
        metavar="SEEDS",
        help="once the grid is finished, run these seeds at the chosen point",
    )
    p.add_argument(
        "--at-chosen",
        "--at_chosen",
        dest="at_chosen",
        default=None,
        metavar="ARM",
        help="run at the point ARM (<algo>-<tag> of an earlier --grid line) chose on validation",
    )
    return p


class _Once(argparse.Action):
    """An option that may be given once: argparse keeps the last of `--algos plain --algos sift`
    without a word, and the sweep would silently skip plain."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, f"_{self.dest}_given", False):
            raise ValueError(
                f"{option_string} given twice ({getattr(namespace, self.dest)!r}, then {values!r}); "
                f"give it once"
                + (
                    f", as one comma list, e.g. {option_string} {getattr(namespace, self.dest)},{values}"
                    if self.dest in ("algos", "seeds")
                    else ""
                )
            )
        setattr(namespace, f"_{self.dest}_given", True)
        setattr(namespace, self.dest, values)


def _plan_args(args: argparse.Namespace, output_dir: Path, rest: list[str]) -> list[PlannedRun]:
    return plan(
        args.params,
        parse_algos(args.algos),
        parse_seeds(args.seeds),
        output_dir,
        args.tag,
        field_overrides(rest),
        grid=args.grid,
        select_on=args.select_on,
        then_seeds=parse_seeds(args.then_seeds, "--then-seeds") if args.then_seeds is not None else None,
    )


def plan_file(path: str | Path, output_dir: Path) -> list[PlannedRun]:
    """Every run of a plan file, in file order; a bad line is an error naming its number."""
    path = Path(path)
    if not path.is_file():
        from siftkit.core.paths import loop_note

        raise ValueError(
            f"plan file {path} is a folder, not a file; name the plan file in it"
            if path.is_dir()
            else f"plan file not found: {path}{loop_note(path)}"
        )
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
            runs += (
                _at_chosen_runs(args, output_dir, rest, runs)
                if args.at_chosen is not None
                else _plan_args(args, output_dir, rest)
            )
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
        raise ValueError(
            f"{path} line {line}: not UTF-8 text (byte {raw[exc.start : exc.start + 1]!r} at offset "
            f"{exc.start}: {exc.reason}); save the plan file as UTF-8"
        ) from None


def _main_parser() -> argparse.ArgumentParser:
    p = _sweep_parser()
    p.add_argument("--plan", default=None, help="a file of sweeps, one per line (replaces --params/--algos/...)")
    p.add_argument(
        "--output-dir",
        "--output_dir",
        dest="output_dir",
        required=True,
        metavar="DIR",
        help="the sweep's root folder (required): runs go to DIR/<task>/<algo>[-<tag>]/seed<k>/, logs to DIR/logs/",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at once")
    p.add_argument("--stop-after", type=float, default=None, help="start no new run after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    p.add_argument("--list", action="store_true", help="print index, output folder and command of each run, and exit")
    p.add_argument("--index", type=int, default=None, metavar="I", help="run only entry I of --list")
    p.add_argument("--shard", default=None, metavar="i/N", help="run only entries i, i+N, i+2N, ... of --list")
    cluster.add_submitit_options(p)
    return p


def _planner(args: argparse.Namespace, rest: list[str]) -> Callable[[], list[PlannedRun]]:
    """What plans the runs, from a plan file or from the options, after checking the options;
    called again whenever a run ends (a waiting run may have become runnable)."""
    if not args.output_dir.strip():  # an unset shell variable: the runs would land in the current folder
        raise ValueError(f"--output-dir is empty ({args.output_dir!r}); name the sweep's folder, e.g. results/cpu")
    if args.stop_after is not None and not args.stop_after > 0:  # also NaN
        raise ValueError(
            f"--stop-after must be a number of seconds > 0, got {args.stop_after:g}; leave it out "
            f"to run every planned run"
        )
    output_dir = Path(args.output_dir)
    from siftkit.core.paths import loop_note

    if loop_note(output_dir):
        raise ValueError(f"--output-dir {args.output_dir!r} cannot be used{loop_note(output_dir)}")
    if args.plan is not None:
        if rest:
            raise ValueError(f"--plan takes the runs from the file; unexpected options {' '.join(rest)}")
        return lambda: plan_file(args.plan, output_dir)
    if args.at_chosen is not None:
        raise ValueError(
            "--at-chosen takes the point another line's grid chose: use it in a plan file, "
            "after the --grid line of that arm"
        )
    return lambda: _plan_args(args, output_dir, rest)


def _print_plan(runs: list[PlannedRun], dry_run: bool) -> None:
    todo = [r for r in runs if not r.done]
    waiting = [r for r in todo if r.waiting]
    print(
        f"sweep: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo) - len(waiting)} to run"
        + (f", {len(waiting)} waiting for a grid to finish" if waiting else ""),
        flush=True,
    )
    if dry_run:
        for r in runs:
            print(
                "done  " + str(r.run_dir)
                if r.done
                else f"wait  {r.run_dir}  ({r.waiting})"
                if r.waiting
                else "todo  " + str(r.run_dir)
            )


def main(argv: list[str] | None = None) -> int:
    argv = cluster.join_option_values(list(sys.argv[1:] if argv is None else argv))
    parser = _main_parser()
    check_option_spelling(
        argv, [o for p in (config_parser("sweep"), parser) for a in p._actions for o in a.option_strings]
    )
    args, rest = parser.parse_known_args(argv)
    planned = _planner(args, rest)
    entries = cluster.select(planned(), index=args.index, shard=args.shard)
    plan_id = f"plan {Path(args.plan).resolve()}" if args.plan else "options " + shlex.join(_plan_words(argv))
    if args.list:
        text = cluster.format_list(entries)
        print(text, flush=True)
        if args.index is None and args.shard is None:
            cluster.record_list(Path(args.output_dir), plan_id, text)
        return 0
    if args.launcher == "submitit":
        return cluster.submit(args, entries)
    if args.index is not None:
        cluster.check_unchanged(Path(args.output_dir), plan_id, args.index, cluster.format_list(entries))
        return cluster.run_entry(*entries[0], Path(args.output_dir) / "logs")
    make_plan = planned
    if args.shard is not None:
        # A shard keeps its entries when the queue plans again (the list's order is fixed).
        def make_plan() -> list[PlannedRun]:
            return [r for _, r in cluster.select(planned(), shard=args.shard)]

    runs = [r for _, r in entries]
    _print_plan(runs, args.dry_run)
    if args.dry_run:
        return 0
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    log_dir = Path(args.output_dir) / "logs"
    deadline = None if args.stop_after is None else time.time() + args.stop_after
    runs, failed, not_started = _run_queue(runs, make_plan, args.jobs, log_dir, deadline)
    return _report(runs, failed, not_started, args.stop_after)


def _plan_words(argv: list[str]) -> list[str]:
    """The words of a sweep command that decide its runs (not --list, --index I, --shard i/N)."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in ("--index", "--shard"):
            skip = True
        elif word != "--list" and not word.startswith(("--index=", "--shard=")):
            out.append(word)
    return out


def _run_queue(
    runs: list[PlannedRun], make_plan: Callable[[], list[PlannedRun]], jobs: int, log_dir: Path, deadline: float | None
) -> tuple[list[PlannedRun], list[PlannedRun], list[PlannedRun]]:
    """Run the runnable runs, `jobs` at a time: a queue in plan order, planned again whenever a
    run ends, so a run that was waiting (a chosen point, a control at another arm's chosen
    point) starts as soon as what it waits for is finished, ahead of later lines. A run is
    tried once per sweep (a failure is not retried); none starts after `deadline`.
    Returns the runs as last planned, the failed ones and those not started."""
    failed, not_started, tried = [], [], set()
    first_waiting = {r.run_dir for r in runs if r.waiting}

    def attempt(run: PlannedRun):
        if deadline is not None and time.time() > deadline:
            return run, None, 0.0
        return run_one(run, log_dir)

    running: dict = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while True:
            while len(running) < jobs:
                busy = {r.run_dir for r in running.values()}
                nxt = next((r for r in runs if r.runnable and r.run_dir not in tried and r.run_dir not in busy), None)
                if nxt is None:
                    break
                if nxt.run_dir in first_waiting:
                    print(f"sweep: {nxt.run_dir} can start now that what it waited for is finished", flush=True)
                tried.add(nxt.run_dir)
                running[pool.submit(attempt, nxt)] = nxt
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                run, code, secs = future.result()
                if code is None:
                    not_started.append(run)
                    continue
                status = "ok" if code == 0 else f"FAILED (exit {code}; see {log_dir})"
                print(f"sweep: {run.run_dir} {status} in {secs:.0f} s", flush=True)
                if code != 0:
                    failed.append(run)
            if any(r.waiting for r in runs):
                runs = make_plan()
    return runs, failed, not_started


def _report(
    runs: list[PlannedRun], failed: list[PlannedRun], not_started: list[PlannedRun], stop_after: float | None
) -> int:
    """What is left undone, and the exit code: 1 if a run failed or runs wait for nothing that will come."""
    waiting = [r for r in runs if not r.done and r.waiting]
    if not_started:
        print(
            f"sweep: {len(not_started)} run(s) not started (--stop-after {stop_after:g} s passed)"
            + (f" and {len(waiting)} run(s) waiting for a grid" if waiting else "")
            + "; rerun the same command to do them",
            flush=True,
        )
    elif waiting:
        print(
            f"sweep: {len(waiting)} run(s) still waiting for a grid (a grid run failed, or no point can be "
            f"chosen): " + ", ".join(f"{r.run_dir} ({r.waiting})" for r in waiting),
            file=sys.stderr,
        )
    if failed:
        print(f"sweep: {len(failed)} run(s) failed: " + ", ".join(str(r.run_dir) for r in failed), file=sys.stderr)
    return 1 if failed or (waiting and not not_started) else 0
