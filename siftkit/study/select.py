"""Choosing among the points of a grid on a validation metric: the rule `sweep --then-seeds`
and `summarize` share, the metrics it may choose on, and how a grid point is named in a tag."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from siftkit.study.metrics import PAPER_METRIC
from siftkit.study.stats import mean_ci

# The validation metric a sweep's grid is chosen on when the plan names none, per protocol
# (P2's held-out UCI validation sentences, `uci_val_size`; P1's in-domain dev set).
DEFAULT_SELECT_ON = {"twitter_to_uci": "uci_val_accuracy", "cola": "in_domain_dev_mcc"}
# Evaluation sets a result is reported on (P2's zero-shot accuracy is measured on the UCI test
# sentences too): a metric of these never chooses anything.
TEST_EVALS = ("uci_test", "uci_zero_shot", "out_of_domain_dev")


def is_test_metric(metric: str) -> bool:
    """True for a metric of a reported (test) evaluation set: nothing is chosen on one."""
    return "test" in metric.lower() or metric in PAPER_METRIC.values() or metric.startswith(TEST_EVALS)


def check_select_on(metric: str, task: str) -> str:
    """`metric` when it may choose among grid points of `task`, else a ValueError saying why."""
    if not re.fullmatch(r"[A-Za-z0-9_.]+", metric or ""):
        raise ValueError(
            f"--select-on must name a metric of results.json, e.g. {DEFAULT_SELECT_ON[task]}; got {metric!r}"
        )
    if is_test_metric(metric):
        raise ValueError(
            f"--select-on {metric} is a test metric: nothing in siftkit selects on a test metric "
            f"(the reported {PAPER_METRIC[task]} would then be chosen on itself); choose on a "
            f"validation metric, e.g. {DEFAULT_SELECT_ON[task]} (the default for {task})"
        )
    return metric


def format_grid_value(value: Any) -> str:
    """A grid value as it appears in a variant's tag: floats with ``:g`` (2e-05, 0.0001), booleans
    as ``true``/``false``, None as ``none``, anything else as its text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def grid_label(point: Mapping[str, Any]) -> str:
    """``learning_rate2e-05_adv_weight5``: each field of a grid point with its value, joined by ``_``."""
    return "_".join(f"{name}{format_grid_value(value)}" for name, value in point.items())


def select_point(values: Sequence[Mapping[int, float]]) -> dict[str, Any]:
    """The choice among grid points (the rule `sweep --then-seeds` and `summarize` share).

    ``values[i]`` is ``{seed: validation metric}`` of point i, in grid order. Points are compared
    over the *selection seeds*, the seeds every point has, so a point that ran extra seeds is not
    favoured; a point whose metric is missing (NaN) for any selection seed cannot be chosen. The
    highest mean wins; a tie goes to the first point in grid order. Returns ``seeds``, per-point
    ``stats`` (`mean_ci` over the selection seeds), per-point ``missing`` seeds and ``chosen`` (an
    index, or None when no point can be chosen)."""
    seeds = sorted(set.intersection(*(set(v) for v in values))) if values else []
    stats, missing = [], []
    for v in values:
        xs = [float(v[s]) for s in seeds]
        stats.append(mean_ci(xs))
        missing.append([s for s, x in zip(seeds, xs) if math.isnan(x)])
    choosable = [i for i, s in enumerate(stats) if seeds and not missing[i]]
    chosen = None
    for i in choosable:  # strictly greater: the first point in grid order keeps a tie
        if chosen is None or stats[i]["mean"] > stats[chosen]["mean"]:
            chosen = i
    return {"seeds": seeds, "stats": stats, "missing": missing, "chosen": chosen}
