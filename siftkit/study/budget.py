"""The equal-budget study past its table (`siftkit.study.arms.equal_budget`): the controls, the size
curve at the tuned rate and the three verdicts, as rows for `siftkit.study.summarize` and notebook 04.

Everything is found in the records, never by a tag's name:

- the *reference* is the reference arm (`siftkit.study.arms.reference_arm`) at its chosen point;
- a *control* is a run at another arm's chosen point (``extra.at_chosen``) that sets a control
  field away from its default (`siftkit.study.arms.CONTROL_DEFAULTS`), or a regularized run with
  ``adv_steps 0`` (random noise); a control that has a grid of its own (L2-SP's weight) counts
  at its chosen point. Its *uncontrolled partner* is the variant of the same algorithm whose
  resolved config equals the control's in every field but the control's own (and, for noise,
  the noise and step fields): the same regularizer at the same point, without the control;
- the *tuned curve* is every size-curve variant (`siftkit.study.tags.CURVE_TAG`) run at the
  reference arm's chosen point.

What is specific to one plan (the old gap's arm and grid point, the verdicts' questions, extra
tags to read as controls) comes from a *study spec*, a YAML file beside the plan
(``<name>_study.yaml``; `siftkit.study.spec`). Without one, the controls, the curve and
verdicts (1) and (2) are still computed; verdict (3) needs the spec's ``old_gap``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from siftkit.study.arms import (
    CONTROL_DEFAULTS,
    CONTROL_FIELDS,
    CONTROL_SETTINGS,
    ArmSelection,
    EqualBudget,
    equal_budget,
)
from siftkit.study.matched import matched_size_pairs, pooled_difference
from siftkit.study.measured import last_stage, stage_start_loss, variant_sizes
from siftkit.study.metrics import PAPER_METRIC
from siftkit.study.runs import (
    SETTINGS_THAT_MAY_DIFFER,
    GroupKey,
    Groups,
    Run,
    config_defaults,
    group_fields,
    per_seed,
    recorded_setting,
    run_extra,
)
from siftkit.study.select import format_grid_value, grid_label
from siftkit.study.spec import listed_control
from siftkit.study.stats import Estimate, mean_ci
from siftkit.study.tags import curve_eps, curve_family, variant_order

# The verdicts' questions when the spec asks none: they name no tag.
QUESTIONS = {
    "beat_reference": "Does any regularizer arm beat the reference arm out of domain at their chosen points, and by "
    "how much?",
    "matched_size": "At matched measured size on the curve at the reference's chosen point, SiFT − SMART?",
    "old_gap": "Which control recovers the old gap at the spec's grid point?",
}
# Fields that set random noise instead of the ascent (adv_steps 0), so differ between a noise
# control and the ascent it stands in for.
NOISE_FIELDS = frozenset({"adv_steps", "adv_noise_std", "adv_step_size"})
# What setting each control away from its default tests, in one line (``{value}``: the run's
# value); ``noise`` is a regularized run with ``adv_steps 0``: random noise instead of the ascent.
CONTROL_TESTS: dict[str, str] = {
    "reinit_head": "confidence carried across the label flip: stage 2 starts from a fresh head, not stage 1's",
    "adv_stages": "where the regularizer acts: only in the {value} stage",
    "label_smoothing": "confidence: targets smoothed by {value}, a softer fit with no perturbation at all",
    "l2sp_weight": "staying near the pre-trained encoder (L2-SP, weight {value}) instead of smoothness",
    "freeze_encoder": "how much fine-tuning the encoder matters: a linear probe on the frozen encoder",
    "early_stopping_patience": "over-fitting in time: stage 2 stops after {value} epoch(s) without a validation gain",
    "noise": "whether the ascent's direction matters: random noise (adv_steps 0, σ {value}) in the same ball",
    "lp_ft_epochs": "feature distortion by a wrong head: {value} head-only epoch(s) before fine-tuning (LP-FT)",
    "wise_ft": "staying near the starting weights after the fact: the encoder interpolated toward theta_0, alpha "
    "chosen on validation (WiSE-FT)",
    "reinit_layers": "whether the top pre-trained layers help or hinder: the top {value} re-initialised",
    "layer_lr_decay": "moving the lower layers less: layer-wise learning-rate decay {value}",
}

CONTROL_COLUMNS = (
    "task",
    "device",
    "code",
    "model",
    "control",
    "algo",
    "sets",
    "what it tests",
    "at",
    "against",
    "against_is",
    "n",
    "seeds",
    "mean",
    "ci_low",
    "ci_high",
    "reading",
)
CURVE_COLUMNS = (
    "task",
    "device",
    "code",
    "model",
    "variant",
    "role",
    "algo",
    "family",
    "eps",
    "size",
    "n",
    "test_mean",
    "test_low",
    "test_high",
    "minus_reference",
    "diff_low",
    "diff_high",
    "reading",
)
START_LOSS_COLUMNS = (
    "task",
    "device",
    "code",
    "model",
    "variant",
    "role",
    "stage",
    "n",
    "start_mean",
    "start_low",
    "start_high",
    "test_mean",
)
VERDICT_COLUMNS = (
    "task",
    "device",
    "code",
    "model",
    "verdict",
    "question",
    "row",
    "n",
    "seeds",
    "mean",
    "ci_low",
    "ci_high",
    "reading",
    "rests_on",
)


# ----------------------------------------------------------------------------- which spec applies


def spec_for(variants: Mapping[str, Sequence[Run]], specs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The first spec whose old gap's arms are grid arms of this group ({} when none is): a
    spec of one study never applies to another group."""
    arms = {run_extra(recs[0]).get("arm") for recs in variants.values()}
    for spec in specs:
        gap = spec.get("old_gap") or {}
        if gap and {gap["arm"], gap["against"]} <= arms:
            return dict(spec)
    return {}


# ----------------------------------------------------------------------------- controls and partners


def control_settings(run: Run) -> dict[str, Any]:
    """The control fields a run sets away from their defaults (a missing key is the default),
    plus ``noise`` (its noise σ) for a regularized run without ascent steps."""
    cfg, defaults = run.record["config"], config_defaults()
    out = {n: cfg.get(n, d) for n, d in CONTROL_DEFAULTS.items() if cfg.get(n, d) != d}
    if run.algo != "plain" and cfg.get("adv_steps", defaults.get("adv_steps")) == 0:
        out["noise"] = cfg.get("adv_noise_std")
    return out


def what_it_tests(settings: Mapping[str, Any]) -> str:
    """`CONTROL_TESTS` of each set field, with its value."""
    return "; ".join(CONTROL_TESTS[n].format(value=format_grid_value(v)) for n, v in settings.items())


def settings_text(settings: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{'adv_steps 0, adv_noise_std' if n == 'noise' else n} {'none' if v is None else format_grid_value(v)}"
        for n, v in settings.items()
    )


def _same_config(a: Run, b: Run, ignore: set[str]) -> bool:
    defaults = config_defaults()
    ca, cb = a.record["config"], b.record["config"]
    names = (set(ca) | set(cb) | set(defaults)) - SETTINGS_THAT_MAY_DIFFER - ignore - {"extra"}
    return all(recorded_setting(ca, n, defaults) == recorded_setting(cb, n, defaults) for n in names)


def uncontrolled_partner(variant: str, variants: Mapping[str, Sequence[Run]], varies: Sequence[str] = ()) -> str | None:
    """The variant of the same algorithm with no control whose resolved config equals
    `variant`'s in every field but the control's own (and the noise fields for noise, and the
    fields a spec says a listed control `varies`). Of several (a grid point and a curve run at
    the same setting), the one sharing the most seeds, then the control's own twin (a WiSE-FT
    run's fine-tuned model), then a run at another arm's chosen point (as the control is), then
    the first name."""
    run = variants[variant][0]
    settings = control_settings(run)
    if not settings and not varies:
        return None
    ignore = (set(settings) - {"noise"}) | (NOISE_FIELDS if "noise" in settings else set()) | set(varies)
    ignore |= {name for control in settings for name in CONTROL_SETTINGS.get(control, ())}
    seeds = {r.seed for r in variants[variant]}
    candidates = [
        v
        for v, recs in variants.items()
        if v != variant
        and recs[0].algo == run.algo
        and not control_settings(recs[0])
        and _same_config(run, recs[0], ignore)
        and not _same_config(run, recs[0], set())
    ]
    if not candidates:
        return None
    # A WiSE-FT run's own twin (its fine-tuned model: the same training, seed for seed) comes first.
    return min(
        candidates,
        key=lambda v: (
            -len(seeds & {r.seed for r in variants[v]}),
            variants[v][0].record.get("twin_of") != variant,
            not run_extra(variants[v][0]).get("at_chosen"),
            v,
        ),
    )


def _at_text(run: Run) -> str:
    taken = run_extra(run).get("at_chosen") or {}
    point = taken.get("point") if isinstance(taken.get("point"), dict) else {}
    return f"{taken.get('arm')}'s chosen {grid_label({k: _as_number(v) for k, v in point.items()})}" if taken else ""


def _as_number(value: Any) -> Any:
    """A point's value as the grid labels it: the sweep records the taken value as typed ("1e-4")."""
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def control_variants(
    variants: Mapping[str, Sequence[Run]], eb: EqualBudget | None, spec: Mapping[str, Any]
) -> list[str]:
    """The group's controls (see the module's docstring), plus any tag the spec lists under
    ``controls``; a control with a grid of its own counts at its chosen point only."""
    chosen = {a.arm: a.chosen for a in (eb.arms if eb else ())}
    listed = set(spec.get("controls") or {})
    out = []
    for v, recs in variants.items():
        extra = run_extra(recs[0])
        if not isinstance(extra.get("at_chosen"), dict):
            continue
        if isinstance(extra.get("grid"), dict) and chosen.get(extra.get("arm")) != v:
            continue  # a point of a control's own grid that was not chosen
        tag = str(extra.get("arm") or "").partition("-")[2] if extra.get("grid") else recs[0].tag
        if control_settings(recs[0]) or tag in listed:
            out.append(v)
    return sorted(out, key=variant_order)


def _control_tag(variant: str, variants: Mapping[str, Sequence[Run]]) -> str:
    extra = run_extra(variants[variant][0])
    return str(extra["arm"]).partition("-")[2] if extra.get("grid") else (variants[variant][0].tag or "")


@dataclass(frozen=True)
class ControlRow:
    """A control against the reference at its chosen point (``against_is`` ``reference``), or
    against its uncontrolled partner (``uncontrolled``; ``reference, uncontrolled`` where the
    partner is the reference itself): the seed-paired difference in the protocol's test metric."""

    group: GroupKey
    control: str
    algo: str
    sets: str
    tests: str  # what it tests, in words
    at: str
    against: str
    against_is: str
    diff: Estimate

    def as_row(self) -> dict[str, Any]:
        """A row of `CONTROL_COLUMNS`."""
        d = self.diff
        return {
            **group_fields(self.group),
            "control": self.control,
            "algo": self.algo,
            "sets": self.sets,
            "what it tests": self.tests,
            "at": self.at,
            "against": self.against,
            "against_is": self.against_is,
            "n": d.n,
            "seeds": list(d.seeds),
            "mean": d.mean,
            "ci_low": d.low,
            "ci_high": d.high,
            "reading": d.reading,
        }


def controls(
    key: GroupKey, variants: Mapping[str, Sequence[Run]], eb: EqualBudget | None, spec: Mapping[str, Any]
) -> list[ControlRow]:
    """Each control against the reference at its chosen point, then against its uncontrolled
    partner where it has one (one row where the partner is the reference itself, as for plain's
    controls)."""
    metric = PAPER_METRIC[key[0]]
    ref = eb.reference_selection if eb else None
    rows = []
    for v in control_variants(variants, eb, spec):
        run = variants[v][0]
        listed_tests, varies = listed_control(spec, _control_tag(v, variants))
        own = control_settings(run)
        settings = {**own, **{f: run.record["config"].get(f) for f in varies}}
        tests = listed_tests or what_it_tests(own)
        against = [(ref.chosen, "reference")] if ref and ref.chosen != v else []
        partner = uncontrolled_partner(v, variants, varies)
        if partner and against and partner == against[0][0]:  # a plain control: tuned plain is both
            against = [(partner, "reference, uncontrolled")]
        elif partner:
            against.append((partner, "uncontrolled"))
        for other, kind in against:
            rows.append(
                ControlRow(
                    group=key,
                    control=v,
                    algo=run.algo,
                    sets=settings_text(settings) or "–",
                    tests=tests,
                    at=_at_text(run),
                    against=other,
                    against_is=kind,
                    diff=Estimate.paired(per_seed(variants[v], metric), per_seed(variants[other], metric)),
                )
            )
    return rows


def control_rows(
    key: GroupKey, variants: Mapping[str, Sequence[Run]], spec: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """`controls` of one group as rows (`CONTROL_COLUMNS`)."""
    return [r.as_row() for r in controls(key, variants, equal_budget(variants, key[0]), spec or {})]


def controls_table(groups: Groups, specs: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """`control_rows` of every group (a DataFrame with ``columns=CONTROL_COLUMNS`` shows them)."""
    return [row for key, variants in groups.items() for row in control_rows(key, variants, spec_for(variants, specs))]


# ----------------------------------------------------------------------------- the curve at the tuned point


def tuned_curve_variants(variants: Mapping[str, Sequence[Run]], eb: EqualBudget | None) -> list[str]:
    """The size-curve variants run at the reference arm's chosen point (``extra.at_chosen.arm``)."""
    if not eb or not eb.reference:
        return []
    return sorted(
        (
            v
            for v, recs in variants.items()
            if curve_eps(recs[0].tag) is not None
            and (run_extra(recs[0]).get("at_chosen") or {}).get("arm") == eb.reference
            and not control_settings(recs[0])
        ),
        key=variant_order,
    )


@dataclass(frozen=True)
class TunedCurve:
    """The size curve run at the reference arm's chosen point: its variants, their curve
    families, and the reference's selection (its chosen variant is the band)."""

    variants: tuple[str, ...]
    families: tuple[str, ...]
    reference: ArmSelection


def tuned_curve_at(variants: Mapping[str, Sequence[Run]], eb: EqualBudget | None) -> TunedCurve | None:
    """The curve at the reference's chosen point, or None when there is no such curve."""
    curve, ref = tuned_curve_variants(variants, eb), eb.reference_selection if eb else None
    if not curve or ref is None:
        return None
    return TunedCurve(
        variants=tuple(curve), families=tuple(sorted({curve_family(variants[v][0].tag) for v in curve})), reference=ref
    )


def tuned_curve(variants: Mapping[str, Sequence[Run]], task: str) -> TunedCurve | None:
    """`tuned_curve_at` the group's `equal_budget`."""
    return tuned_curve_at(variants, equal_budget(variants, task))


@dataclass(frozen=True)
class CurveRow:
    """The band (``role`` ``band``: the reference's chosen point) or one curve variant at the tuned
    point (``line``): its measured size, test metric and seed-paired difference from the band."""

    group: GroupKey
    variant: str
    role: str
    algo: str
    family: str
    eps: float
    size: float
    test: Estimate
    diff: Estimate | None  # None for the band
    reading: str

    def as_row(self) -> dict[str, Any]:
        """A row of `CURVE_COLUMNS`."""
        d = self.diff or Estimate.none()
        return {
            **group_fields(self.group),
            "variant": self.variant,
            "role": self.role,
            "algo": self.algo,
            "family": self.family,
            "eps": self.eps,
            "size": self.size,
            "n": self.test.n,
            "test_mean": self.test.mean,
            "test_low": self.test.low,
            "test_high": self.test.high,
            "minus_reference": d.mean,
            "diff_low": d.low,
            "diff_high": d.high,
            "reading": self.reading,
        }


def curve_rows(key: GroupKey, variants: Mapping[str, Sequence[Run]], tc: TunedCurve | None) -> list[CurveRow]:
    """The band (the reference's chosen point), then each curve variant at the tuned point by
    algorithm and size."""
    if tc is None:
        return []
    metric, ref = PAPER_METRIC[key[0]], tc.reference
    band = variants[ref.chosen]
    rows = [
        CurveRow(
            group=key,
            variant=ref.chosen,
            role="band",
            algo="plain",
            family="",
            eps=math.nan,
            size=math.nan,
            test=Estimate.of([r.metric(metric) for r in band]),
            diff=None,
            reading=f"tuned {ref.arm} at {ref.chosen_label}",
        )
    ]
    sizes = variant_sizes(variants)
    for v in tc.variants:
        recs = variants[v]
        d = Estimate.paired(per_seed(recs, metric), per_seed(band, metric))
        rows.append(
            CurveRow(
                group=key,
                variant=v,
                role="line",
                algo=recs[0].algo,
                family=curve_family(recs[0].tag),
                eps=curve_eps(recs[0].tag),
                size=sizes[v],
                test=Estimate.of([r.metric(metric) for r in recs]),
                diff=d,
                reading=d.reading,
            )
        )
    return rows


def tuned_curve_rows(key: GroupKey, variants: Mapping[str, Sequence[Run]]) -> list[dict[str, Any]]:
    """`curve_rows` as rows (`CURVE_COLUMNS`)."""
    return [r.as_row() for r in curve_rows(key, variants, tuned_curve(variants, key[0]))]


def tuned_curve_table(groups: Groups) -> list[dict[str, Any]]:
    return [row for key, variants in groups.items() for row in tuned_curve_rows(key, variants)]


# ----------------------------------------------------------------------------- the three verdicts


@dataclass(frozen=True)
class VerdictRow:
    """One row of a verdict: what it compares (``what``), its seed-paired difference and what it rests on."""

    group: GroupKey
    verdict: str  # "1", "2" or "3"
    question: str
    what: str
    diff: Estimate
    reading: str
    rests_on: str

    def as_row(self) -> dict[str, Any]:
        """A row of `VERDICT_COLUMNS` (``row``: what it compares)."""
        d = self.diff
        return {
            **group_fields(self.group),
            "verdict": self.verdict,
            "question": self.question,
            "row": self.what,
            "n": d.n,
            "seeds": list(d.seeds),
            "mean": d.mean,
            "ci_low": d.low,
            "ci_high": d.high,
            "reading": self.reading,
            "rests_on": self.rests_on,
        }


def _row(key, verdict: str, question: str, what: str, d: Estimate | None, rests_on: str) -> VerdictRow:
    d = d or Estimate.none()
    return VerdictRow(
        group=key,
        verdict=verdict,
        question=question,
        what=what,
        diff=d,
        reading=d.reading if d.n else "no runs",
        rests_on=rests_on,
    )


def _question(spec: Mapping[str, Any], name: str) -> str:
    return (spec.get("questions") or {}).get(name) or QUESTIONS[name]


def verdict_beat_reference(key, eb: EqualBudget, spec: Mapping[str, Any]) -> list[VerdictRow]:
    """(1): every regularizer arm (not plain, no control) against the reference at their chosen
    points; the first row is the largest mean difference, then one row per arm compared."""
    q = _question(spec, "beat_reference")
    diffs = [
        d for d in eb.differences if d.b.arm == eb.reference and d.a.algo != "plain" and not d.a.control and d.diff.n
    ]
    if not diffs:
        return [_row(key, "1", q, "no regularizer arm has a chosen point paired with the reference", None, "")]
    best = max(diffs, key=lambda d: d.diff.mean)
    n_arms = len(diffs)
    rests = (
        f"{n_arms} regularizer arm(s) compared, each at its chosen point against `{eb.reference}` at "
        f"{best.b.chosen_label}; seed-paired over the seeds both ran"
    )
    # an arm whose grid is not finished chose among fewer points or seeds: its point is no equal-budget choice
    ref_budget = best.b.budget
    short = [f"{d.a.arm} {d.a.budget[0]} × {d.a.budget[1]}" for d in diffs if d.a.budget != ref_budget]
    if short:
        rests += (
            f"; **budgets differ** from the reference's {ref_budget[0]} point(s) × {ref_budget[1]} selection "
            f"seed(s): {', '.join(short)}"
        )
    rows = [
        _row(
            key,
            "1",
            q,
            f"largest: {best.a.arm} ({best.a.chosen_label}) − {eb.reference} "
            f"({best.b.chosen_label}), of {n_arms} arm(s)",
            best.diff,
            rests,
        )
    ]
    for d in sorted(diffs, key=lambda d: -d.diff.mean):
        rows.append(
            _row(key, "1", q, f"{d.a.arm} ({d.a.chosen_label}) − {eb.reference} ({d.b.chosen_label})", d.diff, rests)
        )
    return rows


def verdict_matched_size(
    key, variants: Mapping[str, Sequence[Run]], tc: TunedCurve | None, spec: Mapping[str, Any]
) -> list[VerdictRow]:
    """(2): the pooled matched-size SiFT − SMART on the curve at the tuned point, per family."""
    q = _question(spec, "matched_size")
    if tc is None:
        return [_row(key, "2", q, "no size curve at the reference's chosen point", None, "")]
    rows = []
    metric = PAPER_METRIC[key[0]]
    for family in tc.families:
        pairs = matched_size_pairs(variants, metric, family)
        name = f"{family}_curve_eps<E>" if family else "curve_eps<E>"
        if not pairs:
            rows.append(_row(key, "2", q, f"`{name}`: no SiFT and SMART sizes to pair", None, ""))
            continue
        pooled = pooled_difference(variants, pairs, metric)
        d = Estimate(
            n=pooled["n"],
            mean=pooled["mean"],
            std=pooled["std"],
            low=pooled["low"],
            high=pooled["high"],
            seeds=tuple(pooled["seeds"]),
        )
        rests = (
            f"{pooled['pairs']} matched pair(s) of the `{name}` curve at {tc.reference.arm}'s chosen "
            f"{tc.reference.chosen_label}; per-seed mean over pairs, t interval over seeds"
        )
        rows.append(_row(key, "2", q, f"SiFT − SMART at matched size, pooled (`{name}`)", d, rests))
    return rows


# Joins a verdict (3) row "what <control> removes at <point>: ..." so that `control_shares` finds it.
_REMOVES = " removes at "


def _same_value(a: Any, b: Any) -> bool:
    """Two settings as a grid compares them: numbers as numbers, anything else as labelled."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return format_grid_value(a) == format_grid_value(b)


def _point_variant(arm: ArmSelection, point: Mapping[str, Any]) -> str | None:
    """The arm's variant at a grid point given by value (numbers compared as numbers)."""
    for p in arm.points:
        if set(p.grid) == set(point) and all(_same_value(p.grid[k], point[k]) for k in point):
            return p.variant
    return None


def old_point_controls(variants: Mapping[str, Sequence[Run]], point: Mapping[str, Any]) -> list[str]:
    """The controls run where the old gap was: variants that set a control field, ran at the
    old gap's grid point (the spec's ``old_gap.point``, e.g. the paper's stage-2 rate) and are
    neither a grid point nor at another arm's chosen point. They ask which control closes
    the gap at the rate that had it."""
    defaults = config_defaults()
    out = []
    for v, recs in variants.items():
        run, extra = recs[0], run_extra(recs[0])
        if extra.get("at_chosen") or extra.get("grid") or not control_settings(run):
            continue
        cfg = run.record["config"]
        if all(_same_value(recorded_setting(cfg, k, defaults), value) for k, value in point.items()):
            out.append(v)
    return sorted(out, key=variant_order)


def _gap_per_seed(variants, a: str, b: str, metric: str) -> dict[int, float]:
    pa, pb = per_seed(variants[a], metric), per_seed(variants[b], metric)
    return {s: pa[s] - pb[s] for s in set(pa) & set(pb)}


def _gap(per_seed_gap: Mapping[int, float]) -> Estimate:
    """A per-seed gap as an estimate (its mean over seeds with a t interval)."""
    return Estimate.paired(per_seed_gap, {s: 0.0 for s in per_seed_gap})


def verdict_old_gap(
    key,
    variants: Mapping[str, Sequence[Run]],
    eb: EqualBudget,
    spec: Mapping[str, Any],
    control_rows: Sequence[ControlRow],
) -> list[VerdictRow]:
    """(3): the old gap (the spec's arm minus its `against` arm, both at the spec's grid point),
    the same gap at their chosen points, how much of the old gap tuning removes (per seed, old
    gap − tuned gap), each control's effect against its uncontrolled partner, and the gap with a
    control on both sides where plain and the arm's algorithm ran the same control."""
    gap = spec.get("old_gap")
    q = _question(spec, "old_gap")
    if not gap:
        return []
    metric = PAPER_METRIC[key[0]]
    arms = {a.arm: a for a in eb.arms}
    missing = [n for n in (gap["arm"], gap["against"]) if n not in arms]
    if missing:
        return [_row(key, "3", q, f"no grid arm {', '.join(missing)} in this group", None, "")]
    big, base = arms[gap["arm"]], arms[gap["against"]]
    at = grid_label(gap["point"])
    va, vb = _point_variant(big, gap["point"]), _point_variant(base, gap["point"])
    if not (va and vb):
        return [
            _row(key, "3", q, f"the grid point {at} is not a point of both {gap['arm']} and {gap['against']}", None, "")
        ]
    old = _gap_per_seed(variants, va, vb, metric)
    rows = [_row(key, "3", q, f"old gap: {va} − {vb} (both at {at})", _gap(old), f"the grid runs at {at}, seed-paired")]
    if big.chosen and base.chosen:
        tuned = _gap_per_seed(variants, big.chosen, base.chosen, metric)
        rows.append(
            _row(
                key,
                "3",
                q,
                f"gap at the chosen points: {big.chosen} − {base.chosen}",
                _gap(tuned),
                "each arm at the point chosen on its validation metric",
            )
        )
        rows.append(
            _row(
                key,
                "3",
                q,
                "under-fitting: old gap − gap at the chosen points (what tuning removes)",
                Estimate.paired(old, tuned),
                "per seed, over the seeds both gaps have",
            )
        )
    for c in control_rows:
        if "uncontrolled" in c.against_is:
            rows.append(
                _row(
                    key,
                    "3",
                    q,
                    f"control {c.control} − {c.against}: {c.tests}",
                    c.diff,
                    f"{c.sets}, at {c.at}; seed-paired against the same algorithm without it",
                )
            )
    rows += _gaps_with_control(key, variants, big, q, metric)
    return rows + _controls_at_the_old_point(key, variants, variants[va][0], gap["point"], old, q, metric)


def _controls_at_the_old_point(
    key, variants, big_run: Run, point: Mapping[str, Any], old: Mapping[int, float], q: str, metric: str
) -> list[VerdictRow]:
    """Each control run at the old gap's point against its uncontrolled partner there; and
    where the arm's algorithm and plain ran the same control there, the gap left with the
    control on both sides and how much of the old gap that control removes (per seed).
    `big_run`: a run of the old gap's arm at that point."""
    at = grid_label(point)
    found = old_point_controls(variants, point)
    rows = []
    for v in found:
        settings = control_settings(variants[v][0])
        partner = uncontrolled_partner(v, variants)
        if partner is None:
            continue
        d = Estimate.paired(per_seed(variants[v], metric), per_seed(variants[partner], metric))
        rows.append(
            _row(
                key,
                "3",
                q,
                f"control at {at}: {v} − {partner}: {what_it_tests(settings)}",
                d,
                f"{settings_text(settings)}, at the old gap's {at}; seed-paired against the same algorithm without it",
            )
        )
    for a, b in _plain_twins(found, variants, big_run, set(CONTROL_FIELDS)):
        settings = settings_text(control_settings(variants[a][0]))
        left = _gap_per_seed(variants, a, b, metric)
        rows.append(
            _row(
                key,
                "3",
                q,
                f"gap at {at} with {settings} on both sides: {a} − {b}",
                _gap(left),
                "both at the old gap's point with the same control, seed-paired",
            )
        )
        rows.append(
            _row(
                key,
                "3",
                q,
                f"what {settings}{_REMOVES}{at}: old gap − that gap",
                Estimate.paired(old, left),
                "per seed, over the seeds both gaps have",
            )
        )
    return rows


def _plain_twins(found: Sequence[str], variants: Mapping[str, Sequence[Run]], big_run: Run, ignore: set[str]):
    """(a, b) among the controls `found`: `a` the old gap's arm's own regularizer (`big_run`'s
    config but the `ignore` fields, not another size of the same algorithm) with a control,
    `b` plain with the same control settings; their difference is the gap with the control on
    both sides."""
    for a in found:
        ra = variants[a][0]
        if ra.algo != big_run.algo or not _same_config(ra, big_run, ignore):
            continue
        for b in found:
            if variants[b][0].algo == "plain" and control_settings(variants[b][0]) == control_settings(ra):
                yield a, b


def _gaps_with_control(key, variants, big: ArmSelection, q: str, metric: str) -> list[VerdictRow]:
    """The arm's algorithm and plain with the same control (and no noise), both at another arm's
    chosen point: their difference is the gap with the control on both sides."""
    if not big.chosen:
        return []
    ctl = [
        v
        for v, recs in variants.items()
        if isinstance(run_extra(recs[0]).get("at_chosen"), dict)
        and control_settings(recs[0])
        and "noise" not in control_settings(recs[0])
    ]
    ignore = set(CONTROL_FIELDS) | {"uci_learning_rate", "learning_rate"}
    rows = []
    for a, b in _plain_twins(ctl, variants, variants[big.chosen][0], ignore):
        d = Estimate.paired(per_seed(variants[a], metric), per_seed(variants[b], metric))
        rows.append(
            _row(
                key,
                "3",
                q,
                f"gap with {settings_text(control_settings(variants[a][0]))} on both sides: {a} − {b}",
                d,
                "both at the same point with the same control, seed-paired",
            )
        )
    return rows


@dataclass(frozen=True)
class StartLoss:
    """Where the last stage of one variant starts: its first logged task loss over seeds, beside its test metric."""

    group: GroupKey
    variant: str
    role: str
    stage: str | None
    start: Estimate
    test_mean: float

    def as_row(self) -> dict[str, Any]:
        """A row of `START_LOSS_COLUMNS`."""
        return {
            **group_fields(self.group),
            "variant": self.variant,
            "role": self.role,
            "stage": self.stage,
            "n": self.start.n,
            "start_mean": self.start.mean,
            "start_low": self.start.low,
            "start_high": self.start.high,
            "test_mean": self.test_mean,
        }


def start_losses(
    key: GroupKey, variants: Mapping[str, Sequence[Run]], eb: EqualBudget | None, spec: Mapping[str, Any]
) -> list[StartLoss]:
    """Where the last stage starts, at the old gap's point: its first logged task loss (mean and
    95% t CI over seeds) for the old gap's two grid points and each control run there, beside the
    test metric. The label-flip reading of verdict (3) rests on it: a head that starts far above
    ln 2 is confidently wrong about the new labels."""
    gap = spec.get("old_gap")
    if not gap or eb is None:
        return []
    arms = {a.arm: a for a in eb.arms}
    if not {gap["arm"], gap["against"]} <= set(arms):
        return []
    metric = PAPER_METRIC[key[0]]
    named = [
        (_point_variant(arms[gap["against"]], gap["point"]), "old gap: reference"),
        (_point_variant(arms[gap["arm"]], gap["point"]), "old gap: arm"),
    ]
    named += [(v, "control at the old gap's point") for v in old_point_controls(variants, gap["point"])]
    rows = []
    for v, role in named:
        if v is None:
            continue
        recs = variants[v]
        stage = last_stage(recs[0])
        rows.append(
            StartLoss(
                group=key,
                variant=v,
                role=role,
                stage=stage,
                start=Estimate.of([stage_start_loss(r, stage) for r in recs]),
                test_mean=mean_ci([r.metric(metric) for r in recs])["mean"],
            )
        )
    return rows


def start_loss_rows(
    key: GroupKey, variants: Mapping[str, Sequence[Run]], spec: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """`start_losses` as rows (`START_LOSS_COLUMNS`)."""
    return [r.as_row() for r in start_losses(key, variants, equal_budget(variants, key[0]), spec or {})]


def verdicts(
    key: GroupKey,
    variants: Mapping[str, Sequence[Run]],
    eb: EqualBudget | None,
    tc: TunedCurve | None,
    control_rows: Sequence[ControlRow],
    spec: Mapping[str, Any],
) -> list[VerdictRow]:
    """The three verdicts of one group; none without grid arms and a reference arm. `tc` and
    `control_rows`: the group's `tuned_curve_at` and `controls`."""
    if eb is None or not eb.reference:
        return []
    rows = verdict_beat_reference(key, eb, spec)
    rows += verdict_matched_size(key, variants, tc, spec)
    rows += verdict_old_gap(key, variants, eb, spec, control_rows)
    return rows


def verdict_rows(
    key: GroupKey, variants: Mapping[str, Sequence[Run]], spec: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The three verdicts of one group as rows (`VERDICT_COLUMNS`); none without grid arms."""
    spec = spec or {}
    eb = equal_budget(variants, key[0])
    rows = verdicts(key, variants, eb, tuned_curve_at(variants, eb), controls(key, variants, eb, spec), spec)
    return [r.as_row() for r in rows]


def verdicts_table(groups: Groups, specs: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    return [row for key, variants in groups.items() for row in verdict_rows(key, variants, spec_for(variants, specs))]


@dataclass(frozen=True)
class BudgetStudy:
    """The equal-budget study of one group past its table, computed once: the controls, the curve
    at the tuned point (`tuned_curve`, its rows `curve`), the verdicts and the start losses at the
    old gap's point; `spec`: the study spec that applies to the group ({} when none does)."""

    spec: Mapping[str, Any]
    controls: tuple[ControlRow, ...]
    tuned_curve: TunedCurve | None
    curve: tuple[CurveRow, ...]
    verdicts: tuple[VerdictRow, ...]
    start_losses: tuple[StartLoss, ...]


def budget_study(
    key: GroupKey, variants: Mapping[str, Sequence[Run]], eb: EqualBudget | None, spec: Mapping[str, Any]
) -> BudgetStudy:
    """The group's `BudgetStudy` from its `equal_budget` `eb`."""
    ctl = controls(key, variants, eb, spec)
    tc = tuned_curve_at(variants, eb)
    return BudgetStudy(
        spec=spec,
        controls=tuple(ctl),
        tuned_curve=tc,
        curve=tuple(curve_rows(key, variants, tc)),
        verdicts=tuple(verdicts(key, variants, eb, tc, ctl, spec)),
        start_losses=tuple(start_losses(key, variants, eb, spec)),
    )


def answer(row: Mapping[str, Any], digits: int = 3) -> str:
    """A verdict row as one sentence from its numbers: ``<row>: +0.012 [0.003, 0.021], n=5 — reading``."""
    if not row["n"] or math.isnan(row["mean"]):
        return f"{row['row']}: {row['reading']}."
    ci = "" if math.isnan(row["ci_low"]) else f" [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]"
    return f"{row['row']}: {row['mean']:+.{digits}f}{ci}, n={row['n']} (seeds {row['seeds']}) — {row['reading']}."


def reading_guide(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The verdicts in sentences printed from their numbers (notebook 04's reading guide): per
    group, verdict (1)'s largest difference, (2)'s pooled rows and every row of (3)."""
    out = []
    for r in rows:
        if r["verdict"] == "1" and not r["row"].startswith(("largest", "no ")):
            continue  # the arms one by one are in the table
        where = f"{r['task']}, {r['device']}, code {r['code']}"
        lead = {"1": "Against tuned plain", "2": "At matched size on the tuned curve", "3": "Explaining the old gap"}[
            r["verdict"]
        ]
        out.append(f"({r['verdict']}, {where}) {lead}: {answer(r)} Rests on: {r['rests_on'] or 'nothing'}.")
    for code in dict.fromkeys(r["code"] for r in rows):
        third = [r for r in rows if r["code"] == code and r["verdict"] == "3"]
        share = tuning_share(third)
        if share:
            out.append(f"(3, code {code}) {share}")
        out += [f"(3, code {code}) {s}" for s in control_shares(third)]
    return out


def control_shares(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """How much of the old gap each control at the old gap's point removes (with the control on
    both sides), in one sentence each, from verdict (3)'s rows; none without the old gap."""
    if not rows or not rows[0]["n"] or not rows[0]["mean"]:
        return []
    old = rows[0]
    out = []
    for r in rows:
        what, sep, at = r["row"].partition(_REMOVES)
        if not sep or not what.startswith("what ") or not r["n"]:
            continue
        setting = what[len("what ") :]
        out.append(
            f"With {setting} on both sides at {at.partition(':')[0]}, {r['mean']:+.3f} of the old gap of "
            f"{old['mean']:+.3f} goes ({r['mean'] / old['mean']:.0%}, 95% CI [{r['ci_low']:+.3f}, "
            f"{r['ci_high']:+.3f}], seeds {r['seeds']})."
        )
    return out


def tuning_share(rows: Sequence[Mapping[str, Any]]) -> str:
    """How much of the old gap the tuned rate removes, in one sentence from verdict (3)'s first
    three rows (old gap, gap at the chosen points, their per-seed difference); "" without them."""
    if len(rows) < 3 or not all(r["n"] for r in rows[:3]):
        return ""
    old, tuned, removed = rows[:3]
    if not old["mean"]:
        return ""
    ci = "" if math.isnan(tuned["ci_low"]) else f" [{tuned['ci_low']:+.3f}, {tuned['ci_high']:+.3f}]"
    return (
        f"Tuning the rate removes {removed['mean']:+.3f} of the old gap of {old['mean']:+.3f} "
        f"({removed['mean'] / old['mean']:.0%}, over seeds {removed['seeds']}); the gap left at the chosen "
        f"points is {tuned['mean']:+.3f}{ci} (n={tuned['n']}), which is what the controls' rows have to explain."
    )
