"""The plain variant a group's other variants are measured against: the untagged ``plain``, the
reference arm's chosen point of an equal-budget study, or the tagged plain setting the
selection metric picks (P1's learning rates)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from siftkit.study.arms import EqualBudget, equal_budget
from siftkit.study.runs import SELECTION_METRIC, Run
from siftkit.study.stats import mean_ci


def reference_plain(variants: Mapping[str, Sequence[Run]], task: str) -> str | None:
    """The plain variant the others are measured against: untagged ``plain`` when there is
    one, else the tagged plain with the best mean selection metric (P1's learning rate by
    in_domain_dev MCC). In a group with an equal-budget study, the reference arm's chosen point
    (`budget_reference`): its plain variants are grid points and controls, not settings to pick among."""
    return reference_plain_of(variants, task, equal_budget(variants, task))


def reference_plain_of(variants: Mapping[str, Sequence[Run]], task: str, eb: EqualBudget | None) -> str | None:
    """`reference_plain` given the group's `equal_budget` `eb`."""
    plains = [v for v, recs in variants.items() if recs[0].algo == "plain"]
    if "plain" in plains or not plains:
        return "plain" if plains else None
    chosen = chosen_reference(eb)
    if chosen:
        return chosen
    metric = SELECTION_METRIC[task]
    return max(sorted(plains), key=lambda v: _finite(mean_ci([r.metric(metric) for r in variants[v]])["mean"]))


def budget_reference(variants: Mapping[str, Sequence[Run]], task: str) -> str | None:
    """The chosen variant of the group's reference arm (`equal_budget`), None without one."""
    return chosen_reference(equal_budget(variants, task))


def chosen_reference(eb: EqualBudget | None) -> str | None:
    """The chosen variant of `eb`'s reference arm, None without one."""
    if not eb or not eb.reference:
        return None
    return eb.arm(eb.reference).chosen


def _finite(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def plain_for(variant: str, variants: Mapping[str, Sequence[Run]], reference: str | None) -> str | None:
    """The plain variant to compare `variant` with: ``plain-<t>`` when the variant's tag is
    ``<t>`` or ends in ``_<t>`` (``smart-mtdnn_lr5e-05`` -> ``plain-lr5e-05``), else `reference`
    (the group's `reference_plain`)."""
    tag = variant.partition("-")[2]
    for v, recs in variants.items():
        t = recs[0].tag
        if recs[0].algo == "plain" and t and tag and (tag == t or tag.endswith("_" + t)):
            return v
    return reference
