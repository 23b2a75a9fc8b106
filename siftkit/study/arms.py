"""Equal tuning budgets: the arms of a `sweep --grid` (``extra.arm``: an algorithm, or a control,
at every point of one grid), each chosen on its validation metric over the seeds every point ran,
the reference arm every other is measured against, and the seed-paired test differences at the
chosen points. The test metric is read only at a chosen point: it never chooses."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from siftkit.study.metrics import PAPER_METRIC
from siftkit.study.runs import Groups, Run, group_fields, is_number, per_seed, run_extra
from siftkit.study.select import DEFAULT_SELECT_ON, check_select_on, format_grid_value, grid_label, select_point
from siftkit.study.stats import Estimate
from siftkit.study.tags import variant_order

# The control fields and their defaults. A record written before a field existed lacks it and
# ran with the default; `stage_cache_dir` is not here, as it cannot change a result.
CONTROL_DEFAULTS: dict[str, Any] = {
    "reinit_head": False,
    "adv_stages": "all",
    "label_smoothing": 0.0,
    "l2sp_weight": 0.0,
    "freeze_encoder": False,
    "early_stopping_patience": None,
    "lp_ft_epochs": 0,
    "wise_ft": False,
    "reinit_layers": 0,
    "layer_lr_decay": 1.0,
}
# The settings of a control that mean something only when it is on (LP-FT's rate and stages, WiSE-FT's
# alphas and scope): a run and its uncontrolled partner may differ in them too.
CONTROL_SETTINGS: dict[str, tuple[str, ...]] = {
    "lp_ft_epochs": ("lp_ft_learning_rate", "lp_ft_stages"),
    "wise_ft": ("wise_ft_alphas", "wise_ft_scope"),
}
# Every field a control sets: the control fields and their settings.
CONTROL_FIELDS = frozenset(CONTROL_DEFAULTS) | {name for names in CONTROL_SETTINGS.values() for name in names}
# The columns of `equal_budget_table` and `equal_budget_differences` rows.
EQUAL_BUDGET_COLUMNS = (
    "task",
    "device",
    "code",
    "model",
    "arm",
    "tuned",
    "select_on",
    "points",
    "selection_seeds",
    "chosen",
    "chosen_variant",
    "n",
    "val_mean",
    "val_low",
    "val_high",
    "test_metric",
    "test_mean",
    "test_low",
    "test_high",
    "gap",
    "note",
)
EQUAL_BUDGET_DIFF_COLUMNS = (
    "task",
    "device",
    "code",
    "model",
    "difference",
    "a_chosen",
    "b_chosen",
    "tuned",
    "select_on",
    "metric",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "reading",
)


def has_control(runs: Iterable[Run]) -> bool:
    """True when any run set a control field away from its default (missing = default)."""
    return any(
        r.record["config"].get(name, default) != default for r in runs for name, default in CONTROL_DEFAULTS.items()
    )


def _grid_sort_key(point: Mapping[str, Any]) -> tuple:
    # Records without ``grid_index``: the points in order of their values (numbers numerically).
    return tuple((0, v, "") if is_number(v) else (1, 0, format_grid_value(v)) for v in point.values())


def grid_arms(variants: Mapping[str, Sequence[Run]]) -> dict[str, list[str]]:
    """{arm: its grid-point variants in grid order} for the runs a sweep `--grid` planned
    (``extra.arm`` and ``extra.grid``); arms in the order of `variant_order`."""
    arms: dict[str, list[str]] = defaultdict(list)
    for variant, recs in variants.items():
        extra = run_extra(recs[0])
        if extra.get("arm") and isinstance(extra.get("grid"), dict):
            arms[str(extra["arm"])].append(variant)

    def order(v: str) -> tuple:
        extra = run_extra(variants[v][0])
        index = extra.get("grid_index")
        return (0, index, ()) if isinstance(index, int) else (1, 0, _grid_sort_key(extra["grid"]))

    return {arm: sorted(vs, key=order) for arm, vs in sorted(arms.items(), key=lambda kv: variant_order(kv[0]))}


def _tuned(variants: Mapping[str, Sequence[Run]], points: Sequence[str]) -> dict[str, list[Any]]:
    """{field: its values in grid order} over an arm's points."""
    tuned: dict[str, list[Any]] = {}
    for v in points:
        for name, value in run_extra(variants[v][0])["grid"].items():
            if value not in tuned.setdefault(name, []):
                tuned[name].append(value)
    return tuned


def tuned_text(tuned: Mapping[str, Sequence[Any]]) -> str:
    """``learning_rate ∈ {2e-05, 0.0001}; adv_weight ∈ {1, 5}``."""
    return "; ".join(f"{k} ∈ {{{', '.join(format_grid_value(x) for x in vs)}}}" for k, vs in tuned.items())


def _arm_select_on(arm: str, runs: Sequence[Run], task: str) -> str:
    names = sorted({str(run_extra(r).get("select_on") or DEFAULT_SELECT_ON[task]) for r in runs})
    if len(names) > 1:
        raise ValueError(
            f"arm {arm!r} was chosen on more than one metric ({', '.join(names)}) in one comparison "
            f"(task {runs[0].task}, code {runs[0].commit}): one arm, one select-on metric; e.g. "
            f"{runs[0].path} and {runs[-1].path}"
        )
    try:
        return check_select_on(names[0], task)
    except ValueError as exc:
        raise ValueError(f"{runs[0].path}: extra.select_on: {exc}") from None


@dataclass(frozen=True)
class GridPoint:
    """One point of an arm's grid: its variant, label and settings, the select-on metric over the
    selection seeds (`select`), and the selection seeds that miss it (it cannot be chosen then)."""

    variant: str
    label: str
    grid: Mapping[str, Any]
    select: Estimate
    missing: tuple[int, ...]


@dataclass(frozen=True)
class ArmSelection:
    """One arm's grid, its choice on the validation metric and the chosen point's numbers.

    ``chosen``: the chosen variant or None. ``val``/``test``: the select-on and the reported metric
    at the chosen point over *all* its seeds (extra `--then-seeds` runs included); ``gap`` = val
    mean − test mean; ``test_per_seed`` pairs the arm with others; ``control``: a control field is
    set away from its default; ``at``: the arm at whose chosen point this arm's grid ran."""

    arm: str
    algo: str
    base_tag: str
    select_on: str
    test_metric: str
    tuned: Mapping[str, list[Any]]
    points: tuple[GridPoint, ...]
    selection_seeds: tuple[int, ...]
    chosen: str | None
    chosen_label: str | None
    val: Estimate
    test: Estimate
    gap: float
    test_per_seed: Mapping[int, float]
    control: bool
    at: str | None

    @property
    def budget(self) -> tuple[int, int]:
        """(grid points, selection seeds) the arm chose among."""
        return len(self.points), len(self.selection_seeds)


@dataclass(frozen=True)
class ArmDifference:
    """Arm `a` − arm `b` in the reported metric at their chosen points, seed-paired."""

    a: ArmSelection
    b: ArmSelection
    diff: Estimate


@dataclass(frozen=True)
class EqualBudget:
    """A group's equal-budget comparison (`equal_budget`)."""

    arms: tuple[ArmSelection, ...]
    compared: tuple[ArmSelection, ...]  # the arms of the comparison itself
    control_grids: tuple[ArmSelection, ...]  # arms whose grid ran at another arm's chosen point
    reference: str | None
    reference_note: str
    differences: tuple[ArmDifference, ...]

    def arm(self, name: str) -> ArmSelection | None:
        return next((a for a in self.arms if a.arm == name), None)

    @property
    def reference_selection(self) -> ArmSelection | None:
        """The reference arm's selection, None without a reference or without a chosen point."""
        arm = self.arm(self.reference) if self.reference else None
        return arm if arm is not None and arm.chosen else None


def arm_selection(arm: str, variants: Mapping[str, Sequence[Run]], points: Sequence[str], task: str) -> ArmSelection:
    """One arm's grid, its choice on the validation metric and the chosen point's numbers
    (`ArmSelection`). The select-on statistics of each point are over the selection seeds of the
    grid runs: runs marked ``extra.chosen``, the `--then-seeds` runs at the chosen point, are left
    out of the choice."""
    runs = [r for v in points for r in variants[v]]
    select_on, test_metric = _arm_select_on(arm, runs, task), PAPER_METRIC[task]
    # The choice is made on the grid's runs only, as the sweep made it before it ran the
    # chosen point's extra seeds: those runs can never change which point was chosen.
    choice = select_point(
        [per_seed([r for r in variants[v] if not run_extra(r).get("chosen")], select_on) for v in points]
    )
    seeds = tuple(choice["seeds"])
    grid = [
        GridPoint(
            variant=v,
            label=grid_label(run_extra(variants[v][0])["grid"]),
            grid=dict(run_extra(variants[v][0])["grid"]),
            select=Estimate(**choice["stats"][i], seeds=seeds),
            missing=tuple(choice["missing"][i]),
        )
        for i, v in enumerate(points)
    ]
    chosen = None if choice["chosen"] is None else points[choice["chosen"]]
    chosen_runs = variants[chosen] if chosen else []
    val, test = _stat_of(chosen_runs, select_on), _stat_of(chosen_runs, test_metric)
    return ArmSelection(
        arm=arm,
        algo=runs[0].algo,
        base_tag=arm.partition("-")[2],
        select_on=select_on,
        test_metric=test_metric,
        tuned=_tuned(variants, points),
        points=tuple(grid),
        selection_seeds=seeds,
        chosen=chosen,
        chosen_label=grid[choice["chosen"]].label if chosen else None,
        val=val,
        test=test,
        gap=val.mean - test.mean,
        test_per_seed=per_seed(chosen_runs, test_metric),
        control=has_control(runs),
        at=_taken_from(runs),
    )


def _taken_from(runs: Sequence[Run]) -> str | None:
    """The arm at whose chosen point this arm's grid ran (``extra.at_chosen.arm``: a control
    with a grid of its own, such as an L2-SP weight at tuned plain's rate), else None."""
    taken = run_extra(runs[0]).get("at_chosen")
    return str(taken["arm"]) if isinstance(taken, dict) and taken.get("arm") else None


def _stat_of(runs: Sequence[Run], metric: str) -> Estimate:
    return Estimate.of([r.metric(metric) for r in runs], sorted(r.seed for r in runs))


def reference_arm(arms: Sequence[ArmSelection]) -> tuple[str | None, str]:
    """The arm every other is measured against: the plain arm with no control set (every
    control field at its default); of several, the one whose base tag sorts first. Returns the
    arm (or None) and a sentence saying which and why."""
    plain = sorted((a for a in arms if a.algo == "plain" and not a.control), key=lambda a: a.base_tag)
    if not plain:
        return None, "No plain arm without a control: no reference arm, so no arm-against-reference differences."
    note = f"Reference arm: `{plain[0].arm}` (plain, every control field at its default)"
    if len(plain) > 1:
        others = ", ".join(f"`{a.arm}`" for a in plain[1:])
        note += (
            f"; {others} also qualif{'ies' if len(plain) == 2 else 'y'}, and the first base tag in sort order is used"
        )
    return plain[0].arm, note + "."


def equal_budget(variants: Mapping[str, Sequence[Run]], task: str) -> EqualBudget | None:
    """A group's equal-budget comparison (`EqualBudget`), or None when no run came from a `--grid`
    sweep: every arm's `arm_selection`; ``compared``, the arms of the comparison itself, and
    ``control_grids``, the arms whose grid ran at another arm's chosen point (a control tuned
    on top of that arm's budget: it is read in the controls, at its chosen point, not here);
    ``reference`` and its ``reference_note``; and ``differences``: seed-paired differences of
    the reported metric at the chosen points, every compared arm against the reference, then
    ``sift-<t>`` − ``smart-<t>`` for arms of one base tag."""
    points = grid_arms(variants)
    if not points:
        return None
    arms = [arm_selection(arm, variants, vs, task) for arm, vs in points.items()]
    compared = [a for a in arms if a.at is None]
    by_name = {a.arm: a for a in compared}
    reference, note = reference_arm(compared)
    pairs = [(a.arm, reference) for a in compared if reference and a.arm != reference]
    pairs += [(f"sift-{a.base_tag}", a.arm) for a in compared if a.algo == "smart" and f"sift-{a.base_tag}" in by_name]
    differences = [
        ArmDifference(by_name[a], by_name[b], Estimate.paired(by_name[a].test_per_seed, by_name[b].test_per_seed))
        for a, b in pairs
    ]
    return EqualBudget(
        arms=tuple(arms),
        compared=tuple(compared),
        control_grids=tuple(a for a in arms if a.at is not None),
        reference=reference,
        reference_note=note,
        differences=tuple(differences),
    )


def diff_tuned(a: ArmSelection, b: ArmSelection) -> str:
    ta, tb = tuned_text(a.tuned), tuned_text(b.tuned)
    return ta if ta == tb else f"{a.arm}: {ta}; {b.arm}: {tb}"


def budget_row(key: tuple[str, str, str, str], a: ArmSelection) -> dict[str, Any]:
    """One compared arm as a row of the equal-budget table (`EQUAL_BUDGET_COLUMNS`)."""
    return {
        **group_fields(key),
        "arm": a.arm,
        "tuned": tuned_text(a.tuned),
        "select_on": a.select_on,
        "points": len(a.points),
        "selection_seeds": list(a.selection_seeds),
        "chosen": a.chosen_label,
        "chosen_variant": a.chosen,
        "n": a.test.n,
        "val_mean": a.val.mean,
        "val_low": a.val.low,
        "val_high": a.val.high,
        "test_metric": a.test_metric,
        "test_mean": a.test.mean,
        "test_low": a.test.low,
        "test_high": a.test.high,
        "gap": a.gap,
        "note": choice_note(a),
    }


def difference_row(key: tuple[str, str, str, str], d: ArmDifference) -> dict[str, Any]:
    """One seed-paired difference at chosen points as a row (`EQUAL_BUDGET_DIFF_COLUMNS`)."""
    a, b = d.a, d.b
    return {
        **group_fields(key),
        "difference": f"{a.arm} − {b.arm}",
        "a_chosen": a.chosen_label,
        "b_chosen": b.chosen_label,
        "tuned": diff_tuned(a, b),
        "select_on": a.select_on if a.select_on == b.select_on else f"{a.select_on} / {b.select_on}",
        "metric": a.test_metric,
        "n": d.diff.n,
        "mean": d.diff.mean,
        "ci_low": d.diff.low,
        "ci_high": d.diff.high,
        "reading": d.diff.reading,
    }


def equal_budget_table(
    groups: Groups, budgets: Mapping[tuple, EqualBudget | None] | None = None
) -> list[dict[str, Any]]:
    """The equal-budget table as data: one row per compared arm of every group that has `--grid`
    runs (`EQUAL_BUDGET_COLUMNS`; ``pd.DataFrame(rows, columns=EQUAL_BUDGET_COLUMNS)`` shows it).
    A control's own grid is not an arm of the comparison: it is in `controls_table`. `budgets`:
    each group's `equal_budget`, where the caller has it."""
    budgets = budgets if budgets is not None else equal_budgets(groups)
    return [budget_row(key, a) for key in groups for a in (budgets[key].compared if budgets[key] else ())]


def equal_budget_differences(
    groups: Groups, budgets: Mapping[tuple, EqualBudget | None] | None = None
) -> list[dict[str, Any]]:
    """The seed-paired differences at chosen points as data (`EQUAL_BUDGET_DIFF_COLUMNS`)."""
    budgets = budgets if budgets is not None else equal_budgets(groups)
    return [difference_row(key, d) for key in groups for d in (budgets[key].differences if budgets[key] else ())]


def equal_budgets(groups: Groups) -> dict[tuple, EqualBudget | None]:
    """`equal_budget` of every group, by its key."""
    return {key: equal_budget(variants, key[0]) for key, variants in groups.items()}


def choice_note(arm: ArmSelection) -> str:
    """Why points could not be chosen (missing validation metric), or that none could."""
    notes = [
        f"{p.label}: {arm.select_on} missing for seed(s) {', '.join(map(str, p.missing))}, cannot be chosen"
        for p in arm.points
        if p.missing
    ]
    if not arm.selection_seeds:
        notes.append("no seed is present at every grid point: nothing to choose on")
    elif arm.chosen is None:
        notes.append("no point can be chosen")
    return "; ".join(notes)
