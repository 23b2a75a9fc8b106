"""`python -m siftkit summarize results/`: SUMMARY.md and figures from results.json files.

Runs are read, checked and grouped by `siftkit.study.runs`: only runs of the same task, model,
device and code (``meta.git_commit``, exact match) are ever compared, each group in its own
section. Inside a group a variant is the algorithm plus the sweep's tag (``smart-mtdnn``,
``sift-curve_eps0.01``, ...). For each group:

- mean ± sample std over seeds of the protocol's metrics, the paper's figure beside them;
- paired differences over seeds (same seed = same data split and head initialisation) with
  95% t confidence intervals (scipy.stats): SiFT − SMART with the same tag, every variant
  against its plain and its algorithm's default, and the rows a study spec adds (``paired``: the
  RNG-matched controls);
- the regime table: the comparisons a study spec names (``regime``; the regime study's
  paper's-regime verdicts and their random-noise controls, `results/regime_study.yaml`) and the
  controls at each size of the curve (``curve_eps<E>_<kind>``), where those runs exist; the
  spec's ``headline`` rows are repeated at the top;
- the matched-size table: each SiFT size-curve run (tag ``curve_eps<E>``) paired with the
  SMART size-curve run nearest in *measured* relative perturbation, and the pooled verdict;
- equal tuning budgets, for runs of a ``sweep --grid``: per arm (``extra.arm``, an algorithm
  or a control at every grid point) the mean ± 95% CI of its validation metric
  (``extra.select_on``) at each point over the seeds every point has, the point chosen on it,
  and the chosen point's validation and test metric over all its seeds; the equal-budget table
  (one row per arm) and seed-paired test differences at the chosen points, each arm against the
  reference arm (plain, no control set) and ``sift-<t>`` against ``smart-<t>``. The test metric
  never chooses (`siftkit.study.arms.equal_budget`, `equal_budget_table` for the data);
- for an equal-budget study (`siftkit.study.budget`): the controls against tuned plain and against
  their uncontrolled partners, the size curve at the tuned point with tuned plain as a band, and
  the three verdicts; a study spec (``*_study.yaml`` at the top of a summarized folder, or
  ``--study``; `siftkit.study.spec`) names the old gap's arms and point and words the questions;
- the regularizer's activity (measured relative size, λ·R against the loss and the task
  loss, μ·Bregman), held-out smoothness and per-source UCI accuracy.

Nothing here is typed by hand: every number is read from the files. Metrics an older run did
not record show as "–".
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from siftkit.run.config import DEFAULT_MODEL_NAME
from siftkit.run.records import HISTORY_FILE, RESULTS_FILE, atomic_write_text
from siftkit.study import budget
from siftkit.study.arms import ArmSelection, EqualBudget, choice_note, diff_tuned, tuned_text
from siftkit.study.leaderboard import leaderboard_markdown, verdict_sentences
from siftkit.study.matched import MATCH_FACTOR
from siftkit.study.measured import (
    SOURCE_METRIC,
    activity,
    regularizer_share,
    relative_size,
    smoothness_metrics,
    source_metrics,
    variant_sizes,
)
from siftkit.study.paper import PAPER_METRIC, PAPER_RESULTS, TASK_METRICS
from siftkit.study.reference import reference_plain
from siftkit.study.report import GroupReport, MatchedCurve, Paired, StudyReport, analyse_study
from siftkit.study.runs import SELECTION_METRIC, Groups, Run, group_fields, group_runs, load_runs, short_commit
from siftkit.study.spec import Specs, find_specs, load_spec, regime_section
from siftkit.study.stats import Estimate, format_ci, format_mean_ci, format_mean_std, mean_ci, reading
from siftkit.study.tags import variant_order

__all__ = ["summarize", "brief", "main"]

# (BERT-base, DeBERTa-base) per task and algorithm, from the one table in siftkit.study.paper.
PAPER = {
    task: {
        algo: (PAPER_RESULTS["bert"][task][algo], PAPER_RESULTS["deberta"][task][algo])
        for algo in PAPER_RESULTS["bert"][task]
    }
    for task in PAPER_RESULTS["bert"]
}
# What SUMMARY.md writes where there is no number.
DASH = "–"

INTRO = (
    "Mean ± sample standard deviation over seeds; n = number of seeds; intervals are two-sided 95% "
    "Student t intervals (scipy.stats) over seeds. **Only runs of the same task, model, device and code "
    "are compared**: each section below is one such group, where the code is the run's `meta.git_commit` "
    "matched exactly (a `+dirty` commit, one with local changes, is a different code from the clean "
    "commit; two `+dirty` runs of one commit are taken to be the same code, as the record cannot tell "
    "their changes apart), and the device is `meta.device_name` with the mixed precision. Runs of other "
    "groups are never paired or drawn together. Paper columns: the paper's Table 1 (BERT-base) and "
    "Table 2 (DeBERTa-base), single seed-42 runs of different, larger models — shown for orientation, "
    "not as a like-for-like target."
)


def _fmt(m: float | None, s: float | None = None, digits: int = 3) -> str:
    return format_mean_std(m, s, digits=digits, missing=DASH)


def _sci(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.2e}"


def _sci_std(s: Mapping[str, float]) -> str:
    """``1.23e-05 ± 4.0e-07`` (scientific: smoothness spans orders of magnitude)."""
    if math.isnan(s["mean"]):
        return "–"
    return f"{s['mean']:.2e}" + ("" if math.isnan(s["std"]) else f" ± {s['std']:.1e}")


def _ci(d: Mapping[str, Any], digits: int = 3) -> str:
    return format_ci(d, digits, missing=DASH)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows), ""]


def _stat(runs: Sequence[Run], metric: str) -> dict[str, float]:
    return mean_ci([r.metric(metric) for r in runs])


# ----------------------------------------------------------------------------- one group's sections


def _main_table(report: GroupReport) -> list[str]:
    task = report.task
    metrics = TASK_METRICS[task]
    rows = []
    for s in report.stats:
        paper = PAPER.get(task, {}).get(s.algo) if s.variant == s.algo else None  # a shift spec has none
        wall = s.wall_time
        rows.append(
            [
                f"`{s.variant}`",
                str(len(s.seeds)),
                *(_fmt(s.metrics[m].mean, s.metrics[m].std) for m in metrics),
                _fmt(paper[0], digits=2) if paper else "",
                _fmt(paper[1], digits=2) if paper else "",
                _fmt(wall.mean, wall.std, digits=0),
            ]
        )
    return _table(["variant", "n", *metrics, "paper BERT", "paper DeBERTa", "wall time (s)"], rows)


def _nonfinite_note(variants: Mapping[str, list[Run]]) -> list[str]:
    """Runs that dropped non-finite steps (fewer than their max_nonfinite_fraction, or they
    would have failed): flagged under the table, as their numbers come from fewer updates."""
    flagged = [
        f"`{v}` seed {r.seed} ({r.record['meta']['nonfinite_steps']} steps)"
        for v in sorted(variants, key=variant_order)
        for r in variants[v]
        if (r.record["meta"].get("nonfinite_steps") or 0) > 0
    ]
    if not flagged:
        return []
    return [
        f"**Runs with non-finite (dropped) training steps**, whose numbers come from fewer updates: "
        f"{', '.join(flagged)}.",
        "",
    ]


def _plain_choice(report: GroupReport) -> list[str]:
    """P1: plain's tagged settings (learning rates) and which one the selection metric picks."""
    variants, task = report.variants, report.task
    plains = sorted(v for v, recs in variants.items() if recs[0].algo == "plain" and recs[0].tag)
    if len(plains) < 2 or report.chosen_reference:  # an equal-budget study chose on validation
        return []
    chosen = report.reference_plain
    sel, main = SELECTION_METRIC[task], PAPER_METRIC[task]
    stats = {s.variant: s.metrics for s in report.stats}
    rows = [
        [
            f"`{v}`",
            str(len(variants[v])),
            _fmt(stats[v][sel].mean, stats[v][sel].std),
            _fmt(stats[v][main].mean, stats[v][main].std),
            "←" if v == chosen else "",
        ]
        for v in plains
    ]
    note = (
        f"plain's setting is chosen by `{sel}` (not by the reported `{main}`): **`{chosen}`**; "
        "the regularized variants are compared with it."
        if "plain" not in variants
        else "An untagged `plain` exists and is the reference; the tagged settings are shown for context."
    )
    return ["plain's settings:", "", *_table(["variant", "n", sel, main, "chosen"], rows), note, ""]


def _paired_table(rows: Sequence[Paired], note: str = "") -> list[str]:
    """Seed-paired differences (`GroupReport.paired` or ``selection_paired``)."""
    if not rows:
        return []
    return [
        f"Paired differences in `{rows[0].metric}` (same seeds), with 95% t confidence intervals:{note}",
        "",
        *_table(
            ["difference", "n", "mean", "95% CI", "reading"],
            [
                [f"`{p.a}` − `{p.b}`", str(p.diff.n), _fmt(p.diff.mean), _ci(p.diff.as_dict()), p.diff.reading]
                for p in rows
            ],
        ),
    ]


def _selection_paired_table(report: GroupReport) -> list[str]:
    """A group whose plain was chosen among tagged settings (P1's learning rates): "does it hurt
    in domain?" is asked of the metric the choice used, which flatters plain (the best of several
    settings, on the same dev set)."""
    if not report.selection_paired:
        return []
    note = (
        f" plain's setting was chosen on this same metric, so `{report.reference_plain}` is the best of "
        f"{sum(1 for recs in report.variants.values() if recs[0].algo == 'plain')} settings on this dev set and its "
        "number is biased upward; the regularized variants ran at that setting with no search of their own."
    )
    return _paired_table(report.selection_paired, note=note)


def _regime_table(report: GroupReport, specs: Specs = ()) -> list[str]:
    """The regime table (`siftkit.study.regime`), under the title and intro its study spec gives."""
    rows = []
    for r in report.regime:
        a, b = r["difference"].split(" − ")
        d = {"low": r["ci_low"], "high": r["ci_high"]}
        rows.append([f"`{a}` − `{b}`", r["what it tests"], str(r["n"]), _fmt(r["mean"]), _ci(d), r["reading"]])
    if not rows:
        return []
    section = regime_section(specs)
    intro = section["intro"].format(sizes=_sizes_text(report.variants, section["sizes"]))
    lead = f"Seed-paired differences in `{PAPER_METRIC[report.task]}`, 95% t CIs:"
    return [
        f"### {section['title']}",
        "",
        f"{intro} {lead}" if intro else lead,
        "",
        *_table(["difference", "what it tests", "n", "mean", "95% CI", "reading"], rows),
    ]


def _sizes_text(variants: Mapping[str, list[Run]], patterns: Sequence[str]) -> str:
    """The measured sizes of the variants a spec's pattern matches (`re.search`), in table order."""
    sizes = variant_sizes(variants)
    return ", ".join(
        f"`{v}` {_sci(sizes[v])}" for v in sorted(sizes, key=variant_order) if any(re.search(p, v) for p in patterns)
    )


def _matched_table(task: str, curve: MatchedCurve) -> list[str]:
    """One size-curve family's matched-size table (two curves are never paired)."""
    main, family, pairs, pooled = PAPER_METRIC[task], curve.family, curve.pairs, curve.pooled
    tag = f"{family}_curve_eps<E>" if family else "curve_eps<E>"
    rows = [
        [
            f"`{p['sift']}`",
            _sci(p["sift_size"]),
            f"`{p['smart']}`",
            _sci(p["smart_size"]),
            f"{p['ratio']:.2f}",
            str(p["n"]),
            _fmt(p["mean"]),
            _ci(p),
            (reading(p) if p["sift"] in pooled.get("pooled_pairs", ()) else f"{reading(p)}; not pooled (missing seeds)")
            if p["matched"]
            else f"not matched (sizes differ > {MATCH_FACTOR:g}×)",
        ]
        for p in pairs
    ]
    verdict = (
        f"**Pooled SiFT − SMART at matched size: {_fmt(pooled['mean'])} {_ci(pooled)}** "
        f"over {pooled['pairs']} matched pair(s) and seeds {pooled['seeds']} — {reading(pooled)}. "
        if pooled["pairs"]
        else "No pair is within the matching factor: no pooled verdict. "
    )
    title = "### SiFT against SMART at matched perturbation size" + (f" (the `{tag}` curve)" if family else "")
    return [
        title,
        "",
        f"Each SiFT size-curve run (tag `{tag}`, projected rule) against the SMART size-curve run "
        f"{'of the same curve ' if family else ''}nearest in *measured* mean relative perturbation ‖Δ_t‖/‖z_t‖ (nearest in log size; sizes are "
        "means over seeds). Difference in "
        f"`{main}`, paired by seed, 95% t CI:",
        "",
        *_table(
            [
                "SiFT run",
                "SiFT size",
                "nearest SMART run",
                "SMART size",
                "size ratio",
                "n",
                "SiFT − SMART",
                "95% CI",
                "reading",
            ],
            rows,
        ),
        verdict + "Pooled: for each seed that every pooled pair has, the mean over the pooled pairs of "
        "that seed's SiFT − SMART; then the mean of those per-seed values with a t interval over seeds "
        "(pooling within a seed first, as the pairs of one seed share its data split). Pairs whose sizes "
        f"differ by more than {MATCH_FACTOR:g}× are listed but not pooled, and so are pairs that lack some "
        "of the seeds the other pairs have (runs not finished).",
        "",
    ]


def _mean_ci_text(d: Estimate) -> str:
    return format_mean_ci(d.as_dict(), missing=DASH)


def _arm_lines(arm: ArmSelection) -> list[str]:
    """One arm's grid: the select-on metric per point over the selection seeds, and the choice."""
    sel = arm.select_on
    rows = [
        [
            f"`{p.label}`",
            str(p.select.n),
            _mean_ci_text(p.select),
            "←"
            if p.variant == arm.chosen
            else ("cannot be chosen: missing for seed(s) " + ", ".join(map(str, p.missing)) if p.missing else ""),
        ]
        for p in arm.points
    ]
    head = (
        f"`{arm.arm}`: tuned {tuned_text(arm.tuned)} on `{sel}`, over the selection seeds {list(arm.selection_seeds)}:"
    )
    if arm.chosen is None:
        tail = f"No point can be chosen ({choice_note(arm)}): this arm has no result."
    else:
        val, test = arm.val, arm.test
        tail = (
            f"Chosen: **`{arm.chosen_label}`** (highest mean `{sel}`). Over all its {test.n} seed(s) "
            f"{list(test.seeds)}: `{sel}` {_mean_ci_text(val)}, `{arm.test_metric}` {_mean_ci_text(test)}, "
            f"validation − test gap {_fmt(arm.gap)}."
        )
    return [head, "", *_table(["point", "n", f"{sel} (mean, 95% CI)", "chosen"], rows), tail, ""]


def _equal_budget_section(report: GroupReport) -> list[str]:
    """Every `--grid` arm's choice on validation, the equal-budget table, and the seed-paired
    test differences at the chosen points; nothing when the group has no grid runs."""
    eb = report.equal_budget
    if eb is None:
        return []
    test = PAPER_METRIC[report.task]
    lines = [
        "### Equal tuning budgets: each arm chosen on validation",
        "",
        "Each arm (`<algo>-<tag>` of a `sweep --grid`) ran its grid of settings on the same seeds. Its point "
        "is the one with the highest mean validation metric (the arm's `select_on`) over the *selection "
        "seeds*, the seeds every point of the arm ran in the grid (extra seeds do not favour a point, and "
        "the chosen point's `--then-seeds` runs do not change the choice); a tie goes to the first point in "
        "grid order, and a point missing the metric cannot be chosen. The test metric "
        f"`{test}` is read only at the chosen point, over all its seeds. Nothing here is "
        "chosen on a test metric.",
        "",
    ]
    for arm in eb.arms:
        lines += _arm_lines(arm)
    return lines + _budget_table(eb, test) + [eb.reference_note, ""] + _budget_differences(eb, test)


def _budget_table(eb: EqualBudget, test: str) -> list[str]:
    """The equal-budget table: one row per arm, at its chosen point."""
    rows = [
        [
            f"`{a.arm}`",
            tuned_text(a.tuned),
            f"`{a.select_on}`",
            str(len(a.points)),
            f"`{a.chosen_label}`" if a.chosen else "none",
            str(a.test.n),
            _mean_ci_text(a.val),
            _mean_ci_text(a.test),
            _fmt(a.gap),
        ]
        for a in eb.compared
    ]
    budgets = {(len(a.points), a.selection_seeds) for a in eb.compared}
    note = (
        ""
        if len(budgets) == 1
        else (
            " **The budgets differ** (grid points × selection seeds: "
            + ", ".join(f"`{a.arm}` {len(a.points)} × {len(a.selection_seeds)}" for a in eb.compared)
            + ")."
        )
    )
    grids = [
        f"`{a.arm}` tuned {tuned_text(a.tuned)} at `{a.at}`'s chosen point and chose `{a.chosen_label or 'none'}`"
        for a in eb.control_grids
    ]
    after = (
        []
        if not grids
        else [
            "Not arms of this comparison: "
            + "; ".join(grids)
            + ". A control with a grid of its own is tuned on top of "
            "the budget of the arm it starts from, so it is read in the controls below, at its chosen point.",
            "",
        ]
    )
    return [
        "**The equal-budget table** (validation and test: mean and 95% t CI over all seeds of the chosen "
        f"point; gap = validation − test):{note}",
        "",
        *_table(
            ["arm", "tuned", "chosen on", "points", "chosen point", "n", "validation", f"test `{test}`", "gap"], rows
        ),
        *after,
    ]


def _budget_differences(eb: EqualBudget, test: str) -> list[str]:
    """Seed-paired test differences at the chosen points, saying what was tuned and on what."""
    rows = []
    for d in eb.differences:
        a, b = d.a, d.b
        sel = a.select_on if a.select_on == b.select_on else f"{a.select_on} / {b.select_on}"
        rows.append(
            [
                f"`{a.arm}` − `{b.arm}`",
                f"`{a.chosen_label or 'none'}` − `{b.chosen_label or 'none'}`",
                diff_tuned(a, b),
                f"`{sel}`",
                str(d.diff.n),
                _fmt(d.diff.mean),
                _ci(d.diff.as_dict()),
                d.diff.reading,
            ]
        )
    if not rows:
        return []
    return [
        f"Seed-paired differences in `{test}` at the chosen points (same seeds), 95% t CIs:",
        "",
        *_table(["difference", "chosen points", "tuned", "chosen on", "n", "mean", "95% CI", "reading"], rows),
    ]


def _signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:+.3f}"


def _est_ci(d: Estimate) -> str:
    return _ci({"low": d.low, "high": d.high})


# What each kind of comparison a control row makes is called in the table.
AGAINST_TEXT = {
    "reference": "tuned plain",
    "uncontrolled": "the same algorithm without the control",
    "reference, uncontrolled": "tuned plain, also the same algorithm without the control",
}


def _controls_lines(rows: Sequence[budget.ControlRow]) -> list[str]:
    """Each control against the reference's chosen point and against its uncontrolled partner."""
    if not rows:
        return []
    table = [
        [
            f"`{r.control}`",
            r.sets,
            r.tests,
            r.at,
            f"`{r.against}`",
            AGAINST_TEXT[r.against_is],
            str(r.diff.n),
            _signed(r.diff.mean),
            _est_ci(r.diff),
            r.diff.reading,
        ]
        for r in rows
    ]
    return [
        "### The controls",
        "",
        "Each control is a run at another arm's chosen point (`extra.at_chosen`) with a control field set away "
        "from its default, or random noise (`adv_steps 0`). It is compared, seed-paired, with the reference "
        "arm at its chosen point (tuned plain) and with its *uncontrolled partner*: the variant of the same "
        "algorithm whose resolved config is the control's in every field but the control's own (found by "
        "comparing configs, not tags). Test metric, 95% t CIs:",
        "",
        *_table(
            [
                "control",
                "sets",
                "what it tests",
                "at",
                "against",
                "against is",
                "n",
                "control − against",
                "95% CI",
                "reading",
            ],
            table,
        ),
    ]


def _tuned_curve_lines(rows: Sequence[budget.CurveRow], metric: str, figures: Sequence[str]) -> list[str]:
    """The size curve at the reference's chosen point, tuned plain as the band."""
    if not rows:
        return []
    band, curve = rows[0], rows[1:]
    table = [[f"`{band.variant}` (band)", "plain", "–", "–", str(band.test.n), _mean_ci_text(band.test), "–", "", ""]]
    table += [
        [
            f"`{r.variant}`",
            r.algo,
            f"{r.eps:g}",
            _sci(r.size),
            str(r.test.n),
            _mean_ci_text(r.test),
            _signed(r.diff.mean),
            _est_ci(r.diff),
            r.reading,
        ]
        for r in curve
    ]
    figure = [p for p in figures if "_tuned_curve_" in p]
    return [
        "### The size curve at the tuned point",
        "",
        f"The size-curve runs made at the reference arm's chosen point ({band.reading}), against that point "
        f"as a band (mean and 95% t CI over its {band.test.n} seeds); `{metric}`, and each size's seed-paired "
        "difference from the band. The matched-size SiFT − SMART on this curve is in its own table below; "
        "a curve of another group (another device or code) is only ever drawn in a panel of its own.",
        "",
        *_table(
            ["variant", "algo", "E", "measured size", "n", f"{metric} (mean, 95% CI)", "− band", "95% CI", "reading"],
            table,
        ),
        *([f"![the size curve at the tuned point]({figure[0]})", ""] if figure else []),
    ]


def _verdict_lines(rows: Sequence[budget.VerdictRow], spec: Mapping[str, Any]) -> list[str]:
    """The three verdicts: per verdict its question, then its rows with n, seeds and what they rest on."""
    if not rows:
        return []
    lines = [
        "### The verdicts",
        "",
        "Seed-paired differences in the test metric with 95% t CIs; each row says what it rests on."
        + (
            f" The questions and the old gap's arms and point are the study's (`{Path(spec['path']).name}`)."
            if spec.get("path")
            else ""
        ),
        "",
    ]
    for number in dict.fromkeys(r.verdict for r in rows):
        mine = [r for r in rows if r.verdict == number]
        lines += [
            f"**({number}) {mine[0].question}**",
            "",
            *_table(
                ["row", "n", "seeds", "mean", "95% CI", "reading", "rests on"],
                [
                    [
                        r.what,
                        str(r.diff.n),
                        ", ".join(map(str, r.diff.seeds)) or "–",
                        _signed(r.diff.mean),
                        _est_ci(r.diff),
                        r.reading,
                        r.rests_on,
                    ]
                    for r in mine
                ],
            ),
        ]
    return lines


def _budget_study_sections(report: GroupReport, figures: Sequence[str]) -> list[str]:
    """The controls, the curve at the tuned point and the verdicts (`siftkit.study.budget`)."""
    study, metric = report.budget, PAPER_METRIC[report.task]
    return (
        _controls_lines(study.controls)
        + _tuned_curve_lines(study.curve, metric, figures)
        + _verdict_lines(study.verdicts, study.spec)
        + _start_loss_lines(study.start_losses, metric)
    )


def _start_loss_lines(rows: Sequence[budget.StartLoss], metric: str) -> list[str]:
    """Where the last stage starts at the old gap's point (`siftkit.study.budget.start_losses`)."""
    if not rows:
        return []
    return [
        f"Where stage `{rows[0].stage}` starts, at the old gap's point: its first logged task loss (the mean "
        "over the first logging window; mean and 95% t CI over seeds). After the label flip, ln 2 = 0.693 is a "
        "head with no opinion on the new labels; far above it, a head confidently wrong about them.",
        "",
        *_table(
            ["variant", "what it is", "n", "first task loss", f"`{metric}`"],
            [
                [f"`{r.variant}`", r.role, str(r.start.n), f"{r.start.mean:.3f} {_est_ci(r.start)}", _fmt(r.test_mean)]
                for r in rows
            ],
        ),
    ]


def _wise_ft_lines(report: GroupReport) -> list[str]:
    """WiSE-FT: the alpha each run chose on validation, its metrics there and at alpha = 1 (its
    twin, ``<variant>_alpha1``), and the seed-paired effect of the interpolation per variant."""
    rows, diffs = report.wise_runs, report.wise_differences
    if not rows:
        return []
    select_on, test = rows[0]["select_on"], rows[0]["test_metric"]
    lines = [
        f"WiSE-FT: alpha chosen per run on `{select_on}` (never on a test metric; a tie goes to the larger "
        f"alpha); `{test}` at that alpha and at alpha = 1, the fine-tuned model itself (the run's twin, "
        f"`<variant>_alpha1`):",
        "",
        *_table(
            ["variant", "seed", "scope", "alpha", f"{select_on} at alpha", "at 1", f"{test} at alpha", "at 1"],
            [
                [
                    f"`{r['variant']}`",
                    str(r["seed"]),
                    str(r["scope"]),
                    f"{r['alpha']:g}",
                    _fmt(r["val_at_alpha"]),
                    _fmt(r["val_at_1"]),
                    _fmt(r["test_at_alpha"]),
                    _fmt(r["test_at_1"]),
                ]
                for r in rows
            ],
        ),
    ]
    if diffs:
        lines += [
            f"WiSE-FT minus its own fine-tuned model (alpha = 1), seed-paired, in `{test}`:",
            "",
            *_table(
                ["difference", "n", "mean", "95% CI", "reading"],
                [
                    [
                        f"`{d['variant']}` − `{d['twin']}`",
                        str(d["n"]),
                        _fmt(d["mean"]),
                        _ci({"low": d["ci_low"], "high": d["ci_high"]}),
                        d["reading"],
                    ]
                    for d in diffs
                ],
            ),
        ]
    return lines


def _activity_table(variants: Mapping[str, list[Run]]) -> list[str]:
    rows = []
    for variant in sorted(variants, key=variant_order):
        recs = variants[variant]
        if recs[0].algo == "plain":
            continue
        acts = [activity(r) for r in recs]
        avg = {k: mean_ci([a[k] for a in acts])["mean"] for k in acts[0]}
        skipped = sum(r.record["meta"].get("skipped_adversarial_steps") or 0 for r in recs)
        rows.append(
            [
                f"`{variant}`",
                _sci(mean_ci([relative_size(r) for r in recs])["mean"]),
                _sci(mean_ci([regularizer_share(r) for r in recs])["mean"]),
                _sci(avg["weighted_R_over_task"]),
                _sci(avg["weighted_bregman_over_task"]),
                str(skipped),
            ]
        )
    if not rows:
        return []
    return [
        "Regularizer activity (means over all logged steps and seeds; the size is the run's "
        "`mean_relative_perturbation`, or the same mean over its history for older runs, over the "
        "stages the push acted in (`adv_stages`); "
        "λ·R / loss is R's share of the whole objective):",
        "",
        *_table(
            ["variant", "‖Δ_t‖ / ‖z_t‖", "λ·R / loss", "λ·R / task loss", "μ·Bregman / task loss", "skipped steps"],
            rows,
        ),
    ]


def _metric_table(title: str, variants: Mapping[str, list[Run]], metrics: Sequence[str], fmt, names=None) -> list[str]:
    if not metrics:
        return []
    rows = []
    for variant in sorted(variants, key=variant_order):
        recs = variants[variant]
        cells = []
        for m in metrics:
            s = _stat(recs, m)
            cells.append(fmt(s))
        rows.append([f"`{variant}`", str(len(recs)), *cells])
    return [title, "", *_table(["variant", "n", *(names or metrics)], rows)]


def _figure_lines(paths: Sequence[str]) -> list[str]:
    """Links to a group's figures (paths relative to SUMMARY.md), the size curve shown inline."""
    if not paths:
        return []
    links = " · ".join(f"[{_figure_name(p)}]({p})" for p in paths)
    lines = [f"Figures: {links}", ""]
    main = [p for p in paths if "_size_" in p and not p.endswith(("_reg_share.png", "_smoothness.png"))]
    if main:
        lines += [f"![the main metric against measured perturbation size]({main[0]})", ""]
    return lines


def _figure_name(path: str) -> str:
    stem = Path(path).stem
    for kind in (
        "tuned_curve",
        "curves_by_group",
        "scores",
        "learning_curves",
        "size_reg_share",
        "size_smoothness",
        "size_",
    ):
        if kind in stem:
            return stem[stem.index(kind) :].replace("_", " ")
    return stem


def _group_section(report: GroupReport, figures: Sequence[str] = (), specs: Specs = ()) -> list[str]:
    task, device, commit, model = report.key
    variants = report.variants
    title = {"cola": "P1 · CoLA", "twitter_to_uci": "P2 · Twitter → UCI"}.get(task) or _spec_title(task)
    lines = [f"## {title} — {model} on {device}, code `{short_commit(commit)}`", ""]
    lines += _figure_lines(figures)
    lines += _main_table(report)
    lines += _nonfinite_note(variants)
    lines += _plain_choice(report)
    lines += _equal_budget_section(report)
    lines += _budget_study_sections(report, figures)
    lines += _paired_table(report.paired)
    lines += _selection_paired_table(report)
    plain = report.reference_plain
    if plain:
        spread = next(s for s in report.stats if s.variant == plain).metrics[PAPER_METRIC[task]].std
        lines += [f"Seed-to-seed spread of `{plain}` in `{PAPER_METRIC[task]}`: std {_fmt(spread)}.", ""]
    lines += _regime_table(report, specs)
    lines += _wise_ft_lines(report)
    lines += [line for curve in report.matched for line in _matched_table(task, curve)]
    lines += _activity_table(variants)
    smooth = smoothness_metrics(variants)
    lines += _metric_table(
        "Held-out smoothness: mean symmetric KL between clean predictions and predictions under a fixed, "
        "seeded random probe of the given relative size at `embedding_output`, on each evaluation set "
        "(lower = smoother; mean ± std over seeds):",
        variants,
        smooth,
        _sci_std,
    )
    sources = source_metrics(variants)
    lines += _metric_table(
        f"UCI accuracy per source (held-out {_uci_test_share(variants)}; mean ± std over seeds):",
        variants,
        sources,
        lambda s: _fmt(s["mean"], s["std"]),
        names=[SOURCE_METRIC.match(m).group("source") for m in sources],
    )
    if not sources and task == "twitter_to_uci":
        lines += ["UCI accuracy per source: not recorded by these runs.", ""]
    return lines


def _glance(study: StudyReport, specs: Specs = ()) -> list[str]:
    """The comparisons the studies exist for (their specs' ``headline`` regime rows) and SiFT −
    SMART pooled at matched size, per group that has them."""
    headline = {f"{a} − {b}" for a, b in regime_section(specs)["headline"]}
    rows = [
        [
            f"{r['task']}, {r['device']}, `{r['code']}`",
            f"`{r['difference'].replace(' − ', '` − `')}`",
            str(r["n"]),
            _fmt(r["mean"]),
            _ci({"low": r["ci_low"], "high": r["ci_high"]}),
            r["reading"],
        ]
        for report in study.groups.values()
        for r in report.regime
        if r["difference"] in headline
    ]
    for key, report in study.groups.items():
        where = group_fields(key)
        rows += [
            [
                f"{where['task']}, {where['device']}, `{where['code']}`",
                f"SiFT − SMART at matched size, pooled over {c.pooled['pairs']} matched pair(s)"
                + (f" of the `{c.family}_curve_eps<E>` curve" if c.family else ""),
                str(c.pooled["n"]),
                _fmt(c.pooled["mean"]),
                _ci(c.pooled),
                reading(c.pooled),
            ]
            for c in report.matched
            if c.pooled["n"]
        ]
    if not rows:
        return []
    return [
        "## SiFT against SMART at a glance",
        "",
        "Seed-paired differences in each protocol's metric (95% t CIs); the details, controls and the "
        "size curve are in each group's section below.",
        "",
        *_table(["runs", "difference", "n", "mean", "95% CI", "reading"], rows),
    ]


# The key of the leaderboard's forest figures in `render`'s figures (the groups' keys are tuples of four).
LEADERBOARD_FIGURES = ("leaderboard",)


def _leaderboard_section(study: StudyReport, figures: Sequence[str]) -> list[str]:
    """The benchmark across shifts, when a study spec asks for one (``leaderboard``)."""
    entry, board = study.leaderboard_entry, study.leaderboard
    if entry is None or board is None:
        return []
    lines = [f"## {entry.get('title', 'The leaderboard')}", ""]
    if entry.get("question"):
        lines += [f"**{entry['question'].strip()}**", ""]
    lines += [
        "Each arm's seed-paired difference from tuned plain (the reference arm of its shift) in each "
        "out-of-domain target, at the grid points each chose on its shift's validation metric (mean and "
        "95% t interval); step × plain: the method's cost per training batch over plain's, measured in one process "
        "(benchmarks/README.md; the out-of-domain arms train as plain does, LP-FT adding its head-only epochs and "
        "WiSE-FT its alpha evaluations); wall × plain: the runs' own training time over tuned plain's (per "
        "stage, the median over every run of the arm that trained the stage itself; averaged over shifts), "
        "which shares a machine whose load varied between runs; "
        "the last column counts the shift-target cells whose interval lies above 0, includes 0, or lies "
        "below 0.",
        "",
    ]
    lines += leaderboard_markdown(board) + [""]
    verdict = verdict_sentences(board)
    if verdict:
        lines += ["**What it says.** " + " ".join(verdict), ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures] + ([""] if figures else [])
    return lines


def render(
    groups: Groups,
    n_files: int,
    figures: Mapping[tuple, Sequence[str]] | None = None,
    specs: Sequence[Mapping[str, Any]] = (),
    study: StudyReport | None = None,
) -> tuple[str, StudyReport]:
    """SUMMARY.md's text and the numbers it writes (`siftkit.study.report.StudyReport`) for grouped
    runs; `figures` (per group, paths relative to SUMMARY.md) are linked under each group's heading;
    `specs`: study specs (`siftkit.study.spec.load_spec`): an equal-budget spec applies to the group
    that has its arms, the others' comparisons to every group that ran both of their variants.
    `study`: `analyse_study(groups, specs)`, where the caller has it (computed here otherwise)."""
    study = study if study is not None else analyse_study(groups, specs)
    lines = [
        "# siftkit results summary",
        "",
        f"Generated by `python -m siftkit summarize` from {n_files} results.json files in "
        f"{len(groups)} group(s) of comparable runs. " + INTRO,
        "",
    ]
    lines += _leaderboard_section(study, (figures or {}).get(LEADERBOARD_FIGURES, ()))
    lines += _glance(study, specs)
    for key, report in study.groups.items():
        lines += _group_section(report, (figures or {}).get(key, ()), specs)
    return "\n".join(lines).rstrip() + "\n", study


def summarize(paths: Iterable[str | Path], specs: Sequence[Mapping[str, Any]] | None = None) -> tuple[str, StudyReport]:
    """SUMMARY.md's text and its numbers; `specs` default to the study specs at the top of the folders."""
    paths = list(paths)
    runs = load_runs(paths)
    return render(group_runs(runs), len(runs), specs=find_specs(paths) if specs is None else specs)


def _spec_title(task: str) -> str:
    """``shift:<name>@<hash>`` (`study.register_spec_task`) as a heading."""
    name, _, digest = task.removeprefix("shift:").partition("@")
    return f"Shift spec {name} (spec sha256 {digest}…)"


def brief(paths: Iterable[str | Path]) -> str:
    """The README's compact tables: the main metric of plain / SMART / SiFT per group."""
    groups = group_runs(load_runs(paths))
    lines = [
        "| protocol (metric) | device | code | plain | SMART | SiFT | paper BERT (plain / SMART / SiFT) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, device, commit, model), variants in groups.items():
        # A study with a learning-rate choice (P1) has no untagged variants: its row is the chosen
        # plain and SMART / SiFT at the same tag (the default rule at the chosen rate).
        plain = reference_plain(variants, task)
        tag = variants[plain][0].tag if plain else None
        names = {a: f"{a}-{tag}" if tag else a for a in ("plain", "smart", "sift")}
        if not set(names.values()) & set(variants):
            continue
        cells = []
        for algo in ("plain", "smart", "sift"):
            s = _stat(variants.get(names[algo], []), PAPER_METRIC[task])
            cells.append(f"{_fmt(s['mean'], s['std'])} (n={s['n']})" if s["n"] else "–")
        paper = " / ".join(f"{PAPER[task][a][0]:.2f}" for a in ("plain", "smart", "sift")) if task in PAPER else "–"
        name = (
            "P1 CoLA (out-of-domain dev MCC)"
            if task == "cola"
            else f"P2 Twitter → UCI (accuracy on {_uci_test_share(variants)} UCI)"
            if task == "twitter_to_uci"
            else f"{_spec_title(task)} ({PAPER_METRIC[task]})"
        )
        if model != DEFAULT_MODEL_NAME:
            name += f", {model}"
        if tag:
            name += f", variants `*-{tag}`"
        lines.append(f"| {name} | {device} | `{short_commit(commit)}` | " + " | ".join(cells) + f" | {paper} |")
    return "\n".join(lines) + "\n"


def _uci_test_share(variants: Mapping[str, list[Run]]) -> str:
    """The share of the UCI pool a group's runs test on: 90% in the paper's split, less when
    `uci_val_size` holds sentences out for validation (the stages record the sizes)."""
    shares = set()
    for runs in variants.values():
        for run in runs:
            sizes = {s.get("name"): s for s in run.record.get("stages", []) if isinstance(s, dict)}
            uci = sizes.get("uci", {})
            test, train = (uci.get("evals") or {}).get("uci_test"), uci.get("train_examples")
            if isinstance(test, int) and isinstance(train, int):
                val = (uci.get("evals") or {}).get("uci_val", 0)
                shares.add(round(100 * test / (test + train + val)))
    return "/".join(f"{p}%" for p in sorted(shares)) if shares else "90%"


def _out_path(args: argparse.Namespace) -> Path:
    first = Path(args.paths[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / "SUMMARY.md"
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a folder; give the Markdown file to write, e.g. {out / 'SUMMARY.md'}")
    if out.name in (RESULTS_FILE, HISTORY_FILE) or (out.is_file() and out.suffix.lower() != ".md"):
        # The Markdown would replace a run's record (or a file of its model/) without a trace.
        raise ValueError(
            f"--out {str(out)!r} would replace {'a run record' if out.name in (RESULTS_FILE, HISTORY_FILE) else 'a file that is not Markdown'}"
            f"; give the Markdown file to write, e.g. {out.parent / 'SUMMARY.md'}"
        )
    if out.parent.exists() and not out.parent.is_dir():
        raise ValueError(f"--out {str(out)!r}: {str(out.parent)!r} is a file, not a folder")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="siftkit summarize", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="results folders or results.json files")
    p.add_argument(
        "--out",
        default=None,
        help="Markdown file to write (default: <first path>/SUMMARY.md); missing folders are created",
    )
    p.add_argument("--figures", default=None, help="folder for PNG figures (default: beside --out, figures/)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--brief", action="store_true", help="print the README's compact table and exit")
    p.add_argument(
        "--study",
        action="append",
        default=None,
        metavar="SPEC",
        help="a study spec (YAML: old_gap, controls, questions); default: every *_study.yaml at the top "
        "of the given folders",
    )
    args = p.parse_args(argv)
    if args.brief:
        print(brief(args.paths), end="")
        return 0
    runs = load_runs(args.paths)
    groups = group_runs(runs)
    specs = [load_spec(f) for f in args.study] if args.study else find_specs(args.paths)
    out = _out_path(args)
    fig_dir = Path(args.figures) if args.figures else out.parent / "figures"
    if not args.no_figures and fig_dir.exists() and not fig_dir.is_dir():
        raise ValueError(f"--figures {str(fig_dir)!r} is a file, not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    study = analyse_study(groups, specs)  # every number, once; the figures and the text only draw and write it
    figures: dict[tuple, list[str]] = {}
    if not args.no_figures:
        try:  # matplotlib and seaborn only when figures are asked for
            from siftkit.study.figures import write_group_figures
        except ImportError as exc:
            raise ValueError(
                f"figures need matplotlib and seaborn ({exc}); install siftkit[notebooks] or pass --no-figures"
            ) from None
        from siftkit.study.figures import write_curves_by_group

        for key, variants in groups.items():
            for path in write_group_figures(key, variants, fig_dir, specs, study.groups[key]):
                print(f"wrote {path}")
                figures.setdefault(key, []).append(Path(os.path.relpath(path, out.parent)).as_posix())
        for key, path in write_curves_by_group(groups, fig_dir, specs, study.groups).items():
            print(f"wrote {path}")
            figures.setdefault(key, []).append(Path(os.path.relpath(path, out.parent)).as_posix())
        if study.leaderboard is not None:
            from siftkit.study.figures import write_forest_figures

            for path in write_forest_figures(study.leaderboard, fig_dir).values():
                print(f"wrote {path}")
                figures.setdefault(LEADERBOARD_FIGURES, []).append(Path(os.path.relpath(path, out.parent)).as_posix())
    text, _ = render(groups, len(runs), figures, specs, study)
    atomic_write_text(out, text)
    print(f"wrote {out}")
    return 0
