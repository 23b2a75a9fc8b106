"""A group's analysis, computed once: every number `siftkit.study.summarize` writes about a group
of comparable runs, its figures draw and notebook 04 tabulates, in typed objects (`GroupReport`).

`analyse` runs `siftkit.study.arms.equal_budget` once per group and hands the result to everything
that needs it (the reference plain, the controls, the curve at the tuned point, the verdicts, the
leaderboard); the formatters read the report and compute nothing of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siftkit.study import budget
from siftkit.study.arms import EqualBudget, equal_budget
from siftkit.study.leaderboard import Leaderboard, leaderboard, read_step_costs
from siftkit.study.matched import matched_size_pairs, pooled_difference
from siftkit.study.metrics import PAPER_METRIC, TASK_METRICS
from siftkit.study.reference import chosen_reference, plain_for, reference_plain_of
from siftkit.study.regime import regime_verdicts
from siftkit.study.runs import SELECTION_METRIC, GroupKey, Groups, Run, per_seed
from siftkit.study.spec import Specs, leaderboard_spec, paired_rows
from siftkit.study.stats import Estimate
from siftkit.study.tags import curve_eps, curve_families, variant_order
from siftkit.study.wise import wise_ft_differences, wise_ft_rows


@dataclass(frozen=True)
class VariantStats:
    """One variant of a group: its seeds, each protocol metric and its wall time over them."""

    variant: str
    algo: str
    seeds: tuple[int, ...]
    metrics: Mapping[str, Estimate]
    wall_time: Estimate


@dataclass(frozen=True)
class Paired:
    """Variant `a` − variant `b` in `metric`, seed-paired."""

    a: str
    b: str
    metric: str
    diff: Estimate


@dataclass(frozen=True)
class MatchedCurve:
    """One size-curve family's matched-size pairs (`siftkit.study.matched.matched_size_pairs`)
    and their pooled verdict (`pooled_difference`)."""

    family: str
    pairs: tuple[Mapping[str, Any], ...]
    pooled: Mapping[str, Any]


@dataclass(frozen=True)
class GroupReport:
    """Everything computed about one group of comparable runs.

    ``equal_budget``: the group's `EqualBudget` (None without `--grid` runs); ``reference_plain``:
    the plain variant the others are measured against (`siftkit.study.reference`);
    ``chosen_reference``: the reference arm's chosen variant of an equal-budget study, else None;
    ``budget``: the controls, tuned curve and verdicts (`siftkit.study.budget.BudgetStudy`);
    ``paired``: the paired table's rows in the reported metric; ``selection_paired``: the same
    pairs in the selection metric where plain was chosen among tagged settings (P1); ``regime``:
    `siftkit.study.regime.regime_verdicts` rows; ``matched``: one `MatchedCurve` per curve family;
    ``wise_runs``/``wise_differences``: `siftkit.study.wise` rows."""

    key: GroupKey
    variants: Mapping[str, list[Run]]
    stats: tuple[VariantStats, ...]
    equal_budget: EqualBudget | None
    reference_plain: str | None
    chosen_reference: str | None
    budget: budget.BudgetStudy
    paired: tuple[Paired, ...]
    selection_paired: tuple[Paired, ...]
    regime: tuple[Mapping[str, Any], ...]
    matched: tuple[MatchedCurve, ...]
    wise_runs: tuple[Mapping[str, Any], ...]
    wise_differences: tuple[Mapping[str, Any], ...]

    @property
    def task(self) -> str:
        return self.key[0]


def variant_stats(task: str, variants: Mapping[str, Sequence[Run]]) -> list[VariantStats]:
    """Per variant in table order: its protocol metrics and wall time over seeds."""
    out = []
    for variant in sorted(variants, key=variant_order):
        recs = variants[variant]
        out.append(
            VariantStats(
                variant=variant,
                algo=recs[0].algo,
                seeds=tuple(r.seed for r in recs),
                metrics={m: Estimate.of([r.metric(m) for r in recs]) for m in TASK_METRICS[task]},
                wall_time=Estimate.of([r.record["meta"].get("wall_time_s") or float("nan") for r in recs]),
            )
        )
    return out


def comparison_pairs(
    variants: Mapping[str, Sequence[Run]], reference: str | None, specs: Specs = ()
) -> list[tuple[str, str]]:
    """The paired rows of a group, in reading order; only pairs whose two variants exist:
    SiFT − SMART per tag, every variant against its plain (`siftkit.study.reference.plain_for`),
    the specs' ``paired`` rows, and each tagged variant against its algorithm's default."""
    have = set(variants)
    non_curve = [v for v in sorted(have, key=variant_order) if curve_eps(v.partition("-")[2]) is None]
    tags = sorted({v.partition("-")[2] for v in non_curve})
    pairs = [(f"sift-{t}" if t else "sift", f"smart-{t}" if t else "smart") for t in tags]
    pairs += [(v, plain_for(v, variants, reference)) for v in non_curve if variants[v][0].algo != "plain"]
    extra = paired_rows(specs)  # the study specs' own rows, e.g. the RNG-matched control
    pairs += extra
    # a spec's control (the second of its rows) is what others are measured against, not a
    # variant of its algorithm to compare with the default
    controls = {b for _, b in extra}
    pairs += [
        (v, variants[v][0].algo)
        for v in non_curve
        if variants[v][0].tag and variants[v][0].algo != "plain" and v not in controls
    ]
    seen, out = set(), []
    for a, b in pairs:
        if a in have and b in have and a != b and (a, b) not in seen:
            seen.add((a, b))
            out.append((a, b))
    return out


def _paired(variants: Mapping[str, Sequence[Run]], pairs: Sequence[tuple[str, str]], metric: str) -> list[Paired]:
    """The pairs' seed-paired differences in `metric`, those with at least one common seed."""
    out = [
        Paired(a, b, metric, Estimate.paired(per_seed(variants[a], metric), per_seed(variants[b], metric)))
        for a, b in pairs
    ]
    return [p for p in out if p.diff.n]


def _matched(task: str, variants: Mapping[str, Sequence[Run]]) -> list[MatchedCurve]:
    metric = PAPER_METRIC[task]
    out = []
    for family in curve_families(variants):
        pairs = matched_size_pairs(variants, metric, family)
        if pairs:
            out.append(MatchedCurve(family, tuple(pairs), pooled_difference(variants, pairs, metric)))
    return out


def analyse_group(key: GroupKey, variants: Mapping[str, list[Run]], specs: Specs = ()) -> GroupReport:
    """One group's `GroupReport`; `specs`: the study specs (`siftkit.study.spec.load_spec`)."""
    task = key[0]
    eb = equal_budget(variants, task)
    reference = reference_plain_of(variants, task, eb)
    chosen = chosen_reference(eb)
    pairs = comparison_pairs(variants, reference, specs)
    # plain chosen among tagged settings on the selection metric (P1): the pairs in that metric too
    by_selection = bool(reference) and reference != "plain" and not chosen
    return GroupReport(
        key=key,
        variants=variants,
        stats=tuple(variant_stats(task, variants)),
        equal_budget=eb,
        reference_plain=reference,
        chosen_reference=chosen,
        budget=budget.budget_study(key, variants, eb, budget.spec_for(variants, specs)),
        paired=tuple(_paired(variants, pairs, PAPER_METRIC[task])),
        selection_paired=tuple(_paired(variants, pairs, SELECTION_METRIC[task])) if by_selection else (),
        regime=tuple(r for r in regime_verdicts({key: variants}, specs) if r["n"]),
        matched=tuple(_matched(task, variants)),
        wise_runs=tuple(wise_ft_rows(key, variants)),
        wise_differences=tuple(wise_ft_differences(key, variants)),
    )


def analyse(groups: Groups, specs: Specs = ()) -> dict[GroupKey, GroupReport]:
    """`analyse_group` of every group, by its key, in the groups' order."""
    return {key: analyse_group(key, variants, specs) for key, variants in groups.items()}


@dataclass(frozen=True)
class StudyReport:
    """Every group's `GroupReport` (by key, in the groups' order) and the leaderboard across
    shifts where a study spec asks for one (`siftkit.study.leaderboard`), from the same
    equal-budget results."""

    groups: dict[GroupKey, GroupReport]
    leaderboard: Leaderboard | None
    leaderboard_entry: Mapping[str, Any] | None  # the spec's ``leaderboard`` entry


def declared_budget(entry: Mapping[str, Any]) -> tuple[int, int] | None:
    """A leaderboard entry's ``budget`` as (grid points, selection seeds), None when it declares none."""
    budget = entry.get("budget")
    return (budget["points"], budget["seeds"]) if budget else None


def _step_costs(entry: Mapping[str, Any], specs: Specs) -> dict[str, float]:
    """The leaderboard's per-batch costs: its ``step_cost`` file, relative to its spec's folder."""
    name = entry.get("step_cost")
    if not name:
        return {}
    spec = next(s for s in specs if s.get("leaderboard") is entry)
    return read_step_costs(Path(spec["path"]).parent / name)


def leaderboard_for(groups: Groups, specs: Specs = (), budgets: Mapping[tuple, Any] | None = None) -> Leaderboard:
    """The leaderboard a study spec asks for (its tag prefix, declared budget and step costs), or,
    without any spec that has a ``leaderboard`` entry, every grid arm of `groups` against its
    shift's plain reference (``board.shifts`` is empty when no group has grid arms). `budgets`:
    each group's `equal_budget`, where the caller has them."""
    entry = leaderboard_spec(specs)
    if entry is None:
        board = leaderboard(groups, budgets=budgets)
    else:
        board = leaderboard(
            groups,
            tag_prefix=entry["tag_prefix"],
            budget=declared_budget(entry),
            budgets=budgets,
            step_costs=_step_costs(entry, specs),
        )
    return board


def analyse_study(groups: Groups, specs: Specs = ()) -> StudyReport:
    """`analyse` every group, then the leaderboard from their equal-budget results."""
    reports = analyse(groups, specs)
    entry = leaderboard_spec(specs)
    board = (
        None
        if entry is None
        else leaderboard_for(groups, specs, budgets={key: r.equal_budget for key, r in reports.items()})
    )
    return StudyReport(groups=reports, leaderboard=board, leaderboard_entry=entry)
