"""The regime table: seed-paired differences of the variant pairs a study spec names
(`siftkit.study.spec.regime_section`: the regime study's paper's-regime comparisons and their
random-noise controls), and at each size of a curve its controls (``curve_eps<E>_<kind>``)
against that size's run. A pair is compared only in a group that ran both of its variants."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from siftkit.study.metrics import PAPER_METRIC
from siftkit.study.runs import Groups, Run, group_fields, per_seed
from siftkit.study.spec import Specs, regime_section
from siftkit.study.stats import paired_difference, reading
from siftkit.study.tags import CURVE_CONTROL_TAG

# The columns of `regime_verdicts` rows (a table with no rows keeps them).
REGIME_COLUMNS = (
    "task",
    "device",
    "code",
    "model",
    "difference",
    "what it tests",
    "metric",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "reading",
)


def regime_pairs(variants: Mapping[str, Sequence[Run]], specs: Specs = ()) -> list[tuple[str, str, str]]:
    """(a, b, why) for the specs' regime pairs, then each curve size's controls, where both exist."""
    have = set(variants)
    candidates = regime_section(specs)["pairs"] + curve_control_pairs(have)
    return [(a, b, why) for a, b, why in candidates if a in have and b in have]


def curve_control_pairs(variants: Iterable[str]) -> list[tuple[str, str, str]]:
    """Each ``<algo>-curve_eps<E>_<kind>`` against ``<algo>-curve_eps<E>``: the control at that size."""
    out = []
    for v in sorted(variants):
        algo, _, tag = v.partition("-")
        m = CURVE_CONTROL_TAG.match(tag)
        if m:
            out.append(
                (v, f"{algo}-curve_eps{m.group('eps')}", f"{m.group('kind')} control at curve size {m.group('eps')}")
            )
    return out


def regime_verdicts(groups: Groups, specs: Specs = ()) -> list[dict[str, Any]]:
    """One row per regime comparison (`regime_pairs`) in each group: the seed-paired
    difference in the protocol's metric with its 95% t interval and its reading."""
    rows = []
    for key, variants in groups.items():
        metric = PAPER_METRIC[key[0]]
        for a, b, why in regime_pairs(variants, specs):
            d = paired_difference(per_seed(variants[a], metric), per_seed(variants[b], metric))
            rows.append(
                {
                    **group_fields(key),
                    "difference": f"{a} − {b}",
                    "what it tests": why,
                    "metric": metric,
                    "n": d["n"],
                    "mean": d["mean"],
                    "ci_low": d["low"],
                    "ci_high": d["high"],
                    "reading": reading(d),
                }
            )
    return rows
