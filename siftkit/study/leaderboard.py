"""The leaderboard: every arm against tuned plain, at equal tuning budgets, on every shift.

A benchmark is a set of groups (one per shift: the runs of one task, device, code and model,
`siftkit.study.runs`) whose arms all ran a `sweep --grid` with the same tag prefix. In each group
`siftkit.study.arms.equal_budget` chooses every arm's grid point on the shift's validation metric;
here each arm is then set against the reference arm (plain, no control) of the same group at the
chosen points, seed by seed, on each out-of-domain target of the shift. Nothing chooses on a
target metric.

Computed once into typed objects (`Leaderboard`, `Cell`); `leaderboard_markdown`, the forest
figure (`siftkit.study.figures.forest_figure`) and the verdict sentences only format them.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from siftkit.study.arms import ArmSelection, EqualBudget, equal_budget, tuned_text
from siftkit.study.metrics import PAPER_METRIC, TASK_METRICS
from siftkit.study.runs import Groups, Run, finetuned_twin, is_number, per_seed
from siftkit.study.stats import Estimate, format_mean_ci
from siftkit.study.tags import variant_order

# Human names of the fixed protocols; a shift spec's group is named by the spec's name.
SHIFT_NAMES = {"twitter_to_uci": "P2", "cola": "P1"}


def shift_name(task: str) -> str:
    """``P2`` for twitter_to_uci, the spec's name for ``shift:<name>@<digest>``."""
    if task.startswith("shift:"):
        return task[len("shift:") :].partition("@")[0]
    return SHIFT_NAMES.get(task, task)


def target_metrics(task: str, n_labels: int = 2) -> list[str]:
    """The out-of-domain metrics an arm is judged on: the protocol's reported metric, or every
    evaluation set's accuracy of a shift spec, each followed by its macro-F1 where the spec has
    more than two classes (a target whose majority class is most of it says little in accuracy)."""
    if not task.startswith("shift:"):
        return [PAPER_METRIC[task]]
    metrics = TASK_METRICS[task]
    accuracies = [m for m in metrics if m.endswith("_accuracy") and "_val_" not in m]
    if n_labels <= 2:
        return accuracies
    return [m for a in accuracies for m in (a, a.removesuffix("_accuracy") + "_macro_f1")]


def _n_labels(variants: Mapping[str, Sequence[Run]]) -> int:
    first = next(iter(variants.values()))[0]
    spec = first.record["config"].get("shift")
    return len(spec.get("labels") or ()) if isinstance(spec, Mapping) else 2


@dataclass(frozen=True)
class Cell:
    """One arm on one target of one shift: its difference from tuned plain at the chosen points."""

    shift: str
    metric: str
    arm: str
    chosen: str | None  # the chosen grid point, as a label ("uci_learning_rate=0.0001")
    n: int
    mean: float
    low: float
    high: float
    seeds: tuple[int, ...]
    cost: float | None  # the arm's training time over tuned plain's (`_cost`: per-stage medians of all its runs)
    base: str = ""  # in `against_base`: what the arm is read against

    @property
    def verdict(self) -> str:
        """``better``/``worse`` where the 95% interval excludes 0, ``same`` where it includes it,
        ``–`` where there is no interval."""
        if self.n < 2 or math.isnan(self.low):
            return "–"
        return "better" if self.low > 0 else "worse" if self.high < 0 else "same"


@dataclass(frozen=True)
class ShiftBoard:
    """One shift's part: its reference arm, its targets, each arm's chosen point and budget."""

    shift: str
    task: str
    reference: str | None
    reference_note: str
    targets: tuple[str, ...]
    chosen: Mapping[str, str | None]  # arm -> chosen point label
    budgets: Mapping[str, tuple[int, int]]  # arm -> (grid points, selection seeds)
    tuned: Mapping[str, str]  # arm -> what it tuned, as text
    declared: tuple[int, int] | None = None  # the study spec's budget (grid points, selection seeds)

    @property
    def full_budget(self) -> tuple[int, int]:
        """What a finished arm has: the declared budget, else the largest of the shift."""
        return self.declared or max(self.budgets.values(), default=(0, 0))

    @property
    def incomplete(self) -> list[str]:
        """Arms whose grid has not run at every point on every seed yet (fewer points or seeds than
        a finished arm): not judged until it has, since a partial grid would 'choose' among the
        points that happen to have run."""
        full = self.full_budget
        return [a for a, (p, n) in self.budgets.items() if p <= full[0] and n <= full[1] and (p, n) != full]

    @property
    def equal_budgets(self) -> bool:
        finished = {b for a, b in self.budgets.items() if a not in self.incomplete}
        return finished <= {self.declared} if self.declared else len(finished) <= 1


@dataclass
class Leaderboard:
    """Arms x (shift, target) cells, with each shift's facts."""

    shifts: list[ShiftBoard] = field(default_factory=list)
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)  # (arm, shift, metric) -> cell
    # An arm against its own base runs, where it has them (WiSE-FT: the same runs at alpha = 1):
    # (arm, shift, metric) -> cell whose difference is arm − base, seed for seed.
    against_base: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    algos: dict[str, str] = field(default_factory=dict)  # arm -> its training method
    # algo -> its cost per training batch over plain's, measured in one process at one load
    # (benchmarks/step_cost.py --methods); empty when the study spec names no such file.
    step_costs: dict[str, float] = field(default_factory=dict)

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [(s.shift, m) for s in self.shifts for m in s.targets]

    @property
    def arms(self) -> list[str]:
        refs = {s.reference for s in self.shifts if s.reference}
        names = {arm for arm, _, _ in self.cells}
        return sorted(names, key=lambda a: (a not in refs, variant_order(a)))

    def cell(self, arm: str, shift: str, metric: str) -> Cell | None:
        return self.cells.get((arm, shift, metric))

    def tally(self, arm: str) -> dict[str, int]:
        """How many (shift, target) cells find the arm better, the same or worse than tuned plain."""
        out = {"better": 0, "same": 0, "worse": 0}
        for shift, metric in self.columns:
            c = self.cell(arm, shift, metric)
            if c is not None and c.verdict in out and not self.is_reference(arm, shift):
                out[c.verdict] += 1
        return out

    def is_reference(self, arm: str, shift: str) -> bool:
        return any(s.shift == shift and s.reference == arm for s in self.shifts)

    def step_cost(self, arm: str) -> float | None:
        """The arm's method's per-batch cost over plain's, measured in one process (None: unmeasured)."""
        return self.step_costs.get(self.algos.get(arm, ""))

    def cost(self, arm: str) -> float | None:
        """The arm's mean training-time ratio to tuned plain over the shifts that have one."""
        ratios = {
            s.shift: c.cost
            for (a, s_, _), c in self.cells.items()
            if a == arm
            for s in self.shifts
            if s.shift == s_ and c.cost is not None
        }
        return sum(ratios.values()) / len(ratios) if ratios else None


def _is_twin(variants: Mapping[str, Sequence[Run]], arm: ArmSelection) -> bool:
    return any(r.record.get("twin_of") for p in arm.points for r in variants[p.variant])


def _own_stage_seconds(run: Run) -> dict[str, float]:
    """The training seconds of each stage this run trained itself (meta.stage_train_seconds less
    the stages it read from the stage cache, whose time another run measured)."""
    meta = run.record.get("meta") or {}
    seconds = meta.get("stage_train_seconds")
    if not isinstance(seconds, Mapping):
        return {}
    cached = set(meta.get("stages_from_cache") or ())
    return {stage: float(v) for stage, v in seconds.items() if stage not in cached and is_number(v)}


def _stage_medians(runs: Sequence[Run]) -> dict[str, float]:
    by_stage: dict[str, list[float]] = {}
    for run in runs:
        for stage, v in _own_stage_seconds(run).items():
            by_stage.setdefault(stage, []).append(v)
    return {stage: statistics.median(vs) for stage, vs in by_stage.items()}


def _cost(arm_runs: Sequence[Run], ref_runs: Sequence[Run]) -> float | None:
    """Training time over tuned plain's: per stage, the median over every run of the arm (its whole
    grid and its chosen point) that trained that stage itself, summed over the stages both trained
    (a WiSE-FT arm that read every stage 1 from plain's cache is timed on stage 2).

    Every run of the arm rather than its chosen point only, and medians rather than means, because
    a benchmark's runs share a machine whose load changes between runs; a stage read from the
    stage cache counts where it was trained, once."""
    a, b = _stage_medians(arm_runs), _stage_medians(ref_runs)
    stages = [s for s in a if s in b]
    if not stages:
        return None
    ref = sum(b[s] for s in stages)
    return sum(a[s] for s in stages) / ref if ref > 0 else None


def _all_runs(variants: Mapping[str, Sequence[Run]], arm: ArmSelection) -> list[Run]:
    """Every run of the arm: each grid point's and the chosen point's (--then-seeds) runs, once."""
    names = [p.variant for p in arm.points] + ([arm.chosen] if arm.chosen else [])
    seen: dict[int, Run] = {}
    for name in names:
        for run in variants.get(name, ()):
            seen.setdefault(id(run), run)
    return list(seen.values())


def leaderboard(
    groups: Groups,
    *,
    tag_prefix: str | None = None,
    tasks: Sequence[str] | None = None,
    budget: tuple[int, int] | None = None,
    budgets: Mapping[tuple, EqualBudget | None] | None = None,
    step_costs: Mapping[str, float] | None = None,
) -> Leaderboard:
    """The leaderboard over the groups of `tasks` (all with grid arms when None), reading only the
    arms whose tag starts with `tag_prefix` (all when None). `budget`: the declared (grid points,
    selection seeds) of every arm; an arm below it is still running, one above it breaks the
    equal budget (without it, the shift's largest budget is taken as the full one). `budgets`: each
    group's `equal_budget` by its key, where the caller has them (computed here otherwise)."""
    board = Leaderboard(step_costs=dict(step_costs or {}))
    for key, variants in groups.items():
        task = key[0]
        if tasks is not None and task not in tasks:
            continue
        eb = budgets[key] if budgets is not None else equal_budget(variants, task)
        if eb is None:
            continue
        # A WiSE-FT run's fine-tuned twin (alpha = 1) is read against its run below, not as an arm.
        compared = [
            a
            for a in eb.compared
            if (tag_prefix is None or a.base_tag.startswith(tag_prefix)) and not _is_twin(variants, a)
        ]
        if not compared:
            continue
        by_name = {a.arm: a for a in compared}
        board.algos.update({a.arm: a.algo for a in compared})
        reference = eb.reference if eb.reference in by_name else None
        shift = shift_name(task)
        targets = tuple(target_metrics(task, _n_labels(variants)))
        board.shifts.append(
            ShiftBoard(
                shift=shift,
                task=task,
                reference=reference,
                reference_note=eb.reference_note,
                targets=targets,
                chosen={a.arm: a.chosen_label for a in compared},
                budgets={a.arm: a.budget for a in compared},
                tuned={a.arm: tuned_text(a.tuned) for a in compared},
                declared=budget,
            )
        )
        part = board.shifts[-1]
        if reference is None or reference in part.incomplete:
            continue
        ref_runs = variants[by_name[reference].chosen] if by_name[reference].chosen else []
        ref_all = _all_runs(variants, by_name[reference])
        for a in compared:
            if a.arm in part.incomplete:
                continue
            runs = variants[a.chosen] if a.chosen else []
            twins = [t for t in map(finetuned_twin, runs) if t is not None]
            cost = _cost(_all_runs(variants, a), ref_all)
            base, base_name = (
                (twins, "its own fine-tuned model (alpha = 1, the same runs)")
                if twins
                else _same_rate_base(variants, a, by_name[reference])
            )
            for metric in targets:
                board.cells[(a.arm, shift, metric)] = _cell(shift, metric, a, runs, ref_runs, cost)
                if base:
                    board.against_base[(a.arm, shift, metric)] = replace(
                        _cell(shift, metric, a, runs, base, None), base=base_name
                    )
    return board


def _same_rate_base(
    variants: Mapping[str, Sequence[Run]], arm: ArmSelection, reference: ArmSelection
) -> tuple[list[Run], str]:
    """An out-of-domain arm of the reference's own method (LP-FT, re-initialized layers, layer-wise
    decay: plain with one field set) against the reference's grid point at the arm's chosen values
    of what the reference tunes (its learning rate), seed for seed: what the method itself adds,
    apart from the point it chose. Nothing for the reference, for other methods, or when the
    reference's grid has no such point."""
    if arm.arm == reference.arm or arm.algo != reference.algo or not arm.chosen_label:
        return [], ""
    chosen = next((p for p in arm.points if p.label == arm.chosen_label), None)
    if chosen is None or not set(reference.tuned) <= set(chosen.grid):
        return [], ""
    want = {k: chosen.grid[k] for k in reference.tuned}
    point = next((p for p in reference.points if dict(p.grid) == want), None)
    if point is None:
        return [], ""
    label = ", ".join(f"{k} {v}" for k, v in want.items())
    return list(variants.get(point.variant, ())), f"`{reference.arm}` at its own {label} (the same seeds)"


def _cell(
    shift: str, metric: str, arm: ArmSelection, runs: Sequence[Run], base: Sequence[Run], cost: float | None
) -> Cell:
    """The arm's chosen runs − `base` (tuned plain's, or its own twins), seed-paired, in `metric`."""
    d = Estimate.paired(per_seed(runs, metric), per_seed(base, metric))
    return Cell(
        shift=shift,
        metric=metric,
        arm=arm.arm,
        chosen=arm.chosen_label,
        n=d.n,
        mean=d.mean,
        low=d.low,
        high=d.high,
        seeds=d.seeds,
        cost=cost,
    )


# ----------------------------------------------------------------------------- as text


def read_step_costs(path: str | Path) -> dict[str, float]:
    """algo -> cost per batch over plain's, from `benchmarks/step_cost.py --methods`' JSON (its
    ``rows``, each with ``ratio_to_plain``). An error names the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"step cost file {path} does not exist (benchmarks/step_cost.py --methods writes one)"
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"step cost file {path} is not JSON: {e}") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, dict) or not rows:
        raise ValueError(f'step cost file {path}: no rows (expected {{"rows": {{algo: {{ratio_to_plain: x}}}}}})')
    out = {}
    for algo, row in rows.items():
        ratio = row.get("ratio_to_plain") if isinstance(row, dict) else None
        if not is_number(ratio) or ratio <= 0:
            raise ValueError(
                f"step cost file {path}: rows.{algo}.ratio_to_plain must be a positive number, got {ratio!r}"
            )
        out[algo] = float(ratio)
    return out


def _column_title(shift: str, metric: str, board: Leaderboard) -> str:
    targets = next(s.targets for s in board.shifts if s.shift == shift)
    if len(targets) == 1:
        return shift
    name = metric.removesuffix("_accuracy")
    return f"{shift}: {name.removesuffix('_macro_f1')} macro-F1" if name.endswith("_macro_f1") else f"{shift}: {name}"


def leaderboard_markdown(board: Leaderboard) -> list[str]:
    """The leaderboard as Markdown lines: the table, then each shift's budgets and chosen points."""
    if not board.cells:
        return ["No benchmark arm has a chosen point against a reference yet."]
    cols = board.columns
    steps = bool(board.step_costs)
    head = [
        "arm",
        *(_column_title(s, m, board) for s, m in cols),
        *(["step × plain"] if steps else []),
        "wall × plain",
        "better / same / worse",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in board.arms:
        cells = []
        for shift, metric in cols:
            c = board.cell(arm, shift, metric)
            if c is None:
                cells.append("–")
            elif board.is_reference(arm, shift):
                cells.append("tuned plain (0)")
            else:
                cells.append(format_mean_ci({"mean": c.mean, "low": c.low, "high": c.high}).replace("-", "−"))
        cost, step = board.cost(arm), board.step_cost(arm)
        t = board.tally(arm)
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{arm}`",
                    *cells,
                    *([("–" if step is None else f"{step:.2f}")] if steps else []),
                    "–" if cost is None else f"{cost:.2f}",
                    f"{t['better']} / {t['same']} / {t['worse']}",
                ]
            )
            + " |"
        )
    lines.append("")
    for s in board.shifts:
        same = "every finished arm the same budget" if s.equal_budgets else "**budgets differ**"
        budgets = sorted({b for a, b in s.budgets.items() if a not in s.incomplete})
        finished = [(a, c) for a, c in s.chosen.items() if a not in s.incomplete]
        lines.append(
            f"- **{s.shift}** ({', '.join(s.targets)}; "
            + (
                f"{same}: "
                + "; ".join(f"{p} points × {n} seeds" for p, n in budgets)
                + "). Chosen on validation: "
                + "; ".join(f"`{a}` {c or '–'}" for a, c in finished)
                + "."
                if finished
                else "no arm has finished its grid yet)."
            )
            + (
                " Still running (not judged until every grid point has every seed): "
                + ", ".join(f"`{a}` ({s.budgets[a][0]} points × {s.budgets[a][1]} seeds)" for a in s.incomplete)
                + "."
                if s.incomplete
                else ""
            )
        )
    return lines


def verdict_sentences(board: Leaderboard) -> list[str]:
    """What the leaderboard says, in sentences generated from its cells."""
    cols = board.columns
    if not cols or not board.cells:
        return []
    judged = [
        a for a in board.arms if any(not board.is_reference(a, s) and board.cell(a, s, m) is not None for s, m in cols)
    ]
    better = {a: [c for (arm, _, _), c in board.cells.items() if arm == a and c.verdict == "better"] for a in judged}
    worse = {a: [c for (arm, _, _), c in board.cells.items() if arm == a and c.verdict == "worse"] for a in judged}
    out = []
    winners = [a for a in judged if better[a]]
    if not winners:
        # only the cells some arm is judged in: a shift whose grids are still running has none yet
        judged_cols = {(c.shift, c.metric) for (a, _, _), c in board.cells.items() if a in judged}
        judged_cols -= {
            (s, m)
            for s, m in judged_cols
            if all(board.is_reference(a, s) for a in judged if board.cell(a, s, m) is not None)
        }
        out.append(
            f"No arm beats tuned plain on any of the {len(judged_cols)} shift-target cells judged so far at 95% "
            f"({len(judged)} arms)."
        )
    for a in winners:
        cells = ", ".join(f"{c.shift} {c.metric} by {c.mean:+.3f} [{c.low:+.3f}, {c.high:+.3f}]" for c in better[a])
        step = board.step_cost(a)
        out.append(
            f"`{a}` beats tuned plain on {cells}" + (f", at {step:.2f}× plain's cost per batch." if step else ".")
        )
    mixed = [a for a in winners if worse[a] or board.tally(a)["same"]]
    if mixed:
        out.append("The answer changes between shifts for " + ", ".join(f"`{a}`" for a in mixed) + ".")
    for (arm, shift, metric), c in board.against_base.items():
        out.append(
            f"`{arm}` against {c.base} on {shift} {metric}: {c.mean:+.3f} [{c.low:+.3f}, {c.high:+.3f}] ({c.verdict})."
        )
    losers = [a for a in judged if worse[a]]
    if losers:
        out.append(
            "Worse than tuned plain somewhere: "
            + "; ".join(f"`{a}` ({', '.join(f'{c.shift} {c.mean:+.3f}' for c in worse[a])})" for a in losers)
            + "."
        )
    return out


def leaderboard_rows(board: Leaderboard) -> list[dict[str, Any]]:
    """The cells as data (one row each), for notebooks and tests."""
    return [
        {
            "arm": c.arm,
            "shift": c.shift,
            "metric": c.metric,
            "chosen": c.chosen,
            "n": c.n,
            "mean": c.mean,
            "ci_low": c.low,
            "ci_high": c.high,
            "cost": c.cost,
            "verdict": c.verdict,
        }
        for c in board.cells.values()
    ]
