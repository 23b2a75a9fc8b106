"""SiFT against SMART at matched perturbation size: each SiFT size-curve variant paired with the
SMART one of the same curve nearest in *measured* size, and the pairs pooled into one verdict."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from siftkit.study.measured import variant_sizes
from siftkit.study.metrics import PAPER_METRIC
from siftkit.study.runs import Groups, Run, group_fields, per_seed
from siftkit.study.stats import mean_ci, paired_difference, reading
from siftkit.study.tags import curve_families, curve_family

# Matched-size pairs whose measured sizes differ by more than this factor are listed but not
# pooled: the curve does not reach a comparable size there.
MATCH_FACTOR = 3.0
# The columns of `matched_size_table` rows (a table with no rows keeps them).
MATCHED_COLUMNS = (
    "task",
    "device",
    "code",
    "model",
    "family",
    "sift",
    "sift_size",
    "smart",
    "smart_size",
    "ratio",
    "matched",
    "pooled",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "reading",
)


def matched_size_pairs(
    variants: Mapping[str, Sequence[Run]], metric: str, family: str | None = None
) -> list[dict[str, Any]]:
    """For each SiFT size-curve variant, the SMART size-curve variant of the same curve family
    nearest in measured mean relative size (distance |log size_SiFT - log size_SMART|), and the
    seed-paired SiFT − SMART difference in `metric` with its t interval. ``matched`` is False
    when the two sizes differ by more than MATCH_FACTOR. `family`: that curve only (None: every
    family, each paired within itself; a pair's ``family`` says which)."""
    families = curve_families(variants) if family is None else [family]
    return [p for f in families for p in _family_pairs(variants, metric, f)]


def _family_pairs(variants: Mapping[str, Sequence[Run]], metric: str, family: str) -> list[dict[str, Any]]:
    sizes = variant_sizes(variants)
    curve = {
        algo: {
            v: sizes[v]
            for v, recs in variants.items()
            if recs[0].algo == algo and curve_family(recs[0].tag) == family and sizes[v] > 0
        }
        for algo in ("smart", "sift")
    }
    pairs = []
    for sift_v, sift_size in sorted(curve["sift"].items(), key=lambda kv: kv[1]):
        if not curve["smart"]:
            break
        smart_v = min(curve["smart"], key=lambda v: (abs(math.log(curve["smart"][v] / sift_size)), v))
        ratio = sift_size / curve["smart"][smart_v]
        d = paired_difference(per_seed(variants[sift_v], metric), per_seed(variants[smart_v], metric))
        pairs.append(
            {
                "family": family,
                "sift": sift_v,
                "smart": smart_v,
                "sift_size": sift_size,
                "smart_size": curve["smart"][smart_v],
                "ratio": ratio,
                "matched": 1 / MATCH_FACTOR <= ratio <= MATCH_FACTOR,
                **d,
            }
        )
    return pairs


def pooled_difference(
    variants: Mapping[str, Sequence[Run]], pairs: Sequence[Mapping[str, Any]], metric: str
) -> dict[str, Any]:
    """The pooled matched-size verdict: for each seed that every pooled pair has, the mean
    over pooled pairs of that seed's SiFT − SMART difference; then the mean of those per-seed
    means with a t interval over seeds. Pooling within a seed first keeps the interval honest:
    the pairs of one seed share its data split and are not independent. Pooled pairs: the
    matched pairs that have every seed any matched pair has (a pair with missing seeds is
    left out, ``pooled_pairs`` names the ones used), or all matched pairs when none is complete."""
    used = [p for p in pairs if p["matched"] and p["seeds"]]
    if not used:
        return {**mean_ci([]), "seeds": [], "pairs": 0}
    # A pair still missing seeds (a size whose runs are not all done) would cut every pair
    # down to its seeds: pool the pairs that have all the seeds any pair has, when there are such.
    everyone = set().union(*(p["seeds"] for p in used))
    complete = [p for p in used if set(p["seeds"]) == everyone]
    used = complete or used
    seeds = sorted(set.intersection(*(set(p["seeds"]) for p in used)))
    means = []
    for s in seeds:
        diffs = [
            variants[p["sift"]][_index(variants[p["sift"]], s)].metric(metric)
            - variants[p["smart"]][_index(variants[p["smart"]], s)].metric(metric)
            for p in used
        ]
        means.append(statistics.fmean(diffs))
    return {**mean_ci(means), "seeds": seeds, "pairs": len(used), "pooled_pairs": [p["sift"] for p in used]}


def _index(runs: Sequence[Run], seed: int) -> int:
    return next(i for i, r in enumerate(runs) if r.seed == seed)


def matched_size_table(groups: Groups) -> list[dict[str, Any]]:
    """One row per matched-size pair (`matched_size_pairs`) in each group and curve family, then
    that curve's pooled verdict (`pooled_difference`) as a row whose ``sift`` is ``pooled``
    (``family``: ``""`` for the ``curve_eps<E>`` curve, ``tuned`` for ``tuned_curve_eps<E>``)."""
    rows = []
    for key, variants in groups.items():
        for family in curve_families(variants):
            rows += _matched_rows(key, variants, family)
    return rows


def _matched_rows(
    key: tuple[str, str, str, str], variants: Mapping[str, Sequence[Run]], family: str
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    metric = PAPER_METRIC[key[0]]
    pairs = matched_size_pairs(variants, metric, family)
    pooled = pooled_difference(variants, pairs, metric)
    for p in pairs:
        rows.append(
            {
                **group_fields(key),
                "family": family,
                "sift": p["sift"],
                "sift_size": p["sift_size"],
                "smart": p["smart"],
                "smart_size": p["smart_size"],
                "ratio": p["ratio"],
                "matched": p["matched"],
                "pooled": p["sift"] in pooled.get("pooled_pairs", ()),
                "n": p["n"],
                "mean": p["mean"],
                "ci_low": p["low"],
                "ci_high": p["high"],
                "reading": reading(p) if p["matched"] else "not matched",
            }
        )
    if pairs:
        rows.append(
            {
                **group_fields(key),
                "family": family,
                "sift": "pooled",
                "smart": f"{pooled['pairs']} matched pair(s)",
                "n": pooled["n"],
                "mean": pooled["mean"],
                "ci_low": pooled["low"],
                "ci_high": pooled["high"],
                "reading": reading(pooled),
            }
        )
    return rows
