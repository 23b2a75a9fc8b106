"""What a run measured beside its reported metric: the perturbation's relative size and the
regularizer's share of the objective (from the record, or its history for older runs), and which
smoothness and per-source metrics a group's runs recorded; `runs_frame` puts them in one row per
run for the figures."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from siftkit.study.runs import Run, is_number
from siftkit.study.stats import mean_ci
from siftkit.study.tags import curve_eps, curve_family

SMOOTHNESS_METRIC = re.compile(r"^(?P<eval>.+)_smoothness_(?P<probe>.+)$")
SOURCE_METRIC = re.compile(r"^uci_test_accuracy_(?P<source>[a-z]+)$")


def _history_mean(run: Run, value, stages: set[str] | None = None) -> float:
    rows = [row for row in run.record["history"] if stages is None or row.get("stage") in stages]
    xs = [v for v in (value(row) for row in rows) if is_number(v) and math.isfinite(v)]
    return statistics.fmean(xs) if xs else math.nan


def acting_stages(run: Run) -> set[str] | None:
    """The stages in which the run's regularizer acted, when that is only some of them
    (``adv_stages first`` or ``last``); None when it acted in every stage (or in none)."""
    stages = run.record.get("stages") or []
    acting = {s["name"] for s in stages if s.get("adversarial")}
    return acting if acting and len(acting) < len(stages) else None


def relative_size(run: Run) -> float:
    """Measured mean per-token ||Delta_t|| / ||z_t|| over the steps where the push acted: the
    run's ``mean_relative_perturbation``, or, for runs recorded before that metric existed, the
    same mean over its history rows. A run whose regularizer acted in some stages only is
    measured over those stages' rows (older records averaged in the zeros of the others)."""
    acting = acting_stages(run)
    value = run.metrics.get("mean_relative_perturbation")
    if value is not None and acting is None:
        return float(value)
    return _history_mean(run, lambda row: row.get("relative_perturbation"), acting)


def stage_start_loss(run: Run, stage: str) -> float:
    """The task loss of `stage`'s first logged row: the mean over its first logging window
    (``logging_steps`` steps). After a label flip, ln 2 is a head with no opinion on the new
    labels; well above it, a head confidently wrong about them. NaN without such a row."""
    rows = [r for r in run.record["history"] if r.get("stage") == stage and is_number(r.get("task_loss"))]
    return float(rows[0]["task_loss"]) if rows else math.nan


def last_stage(run: Run) -> str | None:
    """The name of the run's last stage (from its record's stages, else its history)."""
    stages = [s.get("name") for s in run.record.get("stages") or []]
    names = stages or list(dict.fromkeys(r.get("stage") for r in run.record["history"]))
    return names[-1] if names else None


def regularizer_share(run: Run) -> float:
    """Mean over logged steps of adv_weight * R / loss (loss = the whole objective: task +
    adv_weight * R + bregman_weight * Bregman), i.e. R's share of what the optimizer minimised."""
    w = run.record["config"].get("adv_weight") or 0.0

    def share(row: Mapping[str, Any]) -> float | None:
        loss, r = row.get("loss"), row.get("adv_loss")
        return None if not (is_number(loss) and is_number(r)) or loss <= 0 else w * r / loss

    return _history_mean(run, share)


def activity(run: Run) -> dict[str, float]:
    """Mean over logged steps of weighted R / task loss and weighted Bregman / task loss."""
    cfg = run.record["config"]
    w, mu = cfg.get("adv_weight") or 0.0, cfg.get("bregman_weight") or 0.0

    def over_task(key: str, weight: float):
        def f(row):
            task, v = row.get("task_loss"), row.get(key)
            return None if not (is_number(task) and is_number(v)) or task <= 0 else weight * v / task

        return f

    return {
        "weighted_R_over_task": _history_mean(run, over_task("adv_loss", w)),
        "weighted_bregman_over_task": _history_mean(run, over_task("bregman_loss", mu)),
    }


def variant_sizes(variants: Mapping[str, Sequence[Run]]) -> dict[str, float]:
    """Mean measured relative size over seeds, per regularized variant."""
    return {
        v: mean_ci([relative_size(r) for r in recs])["mean"] for v, recs in variants.items() if recs[0].algo != "plain"
    }


def smoothness_metrics(variants: Mapping[str, Sequence[Run]]) -> list[str]:
    """The ``<eval>_smoothness_<probe>`` metrics the group's runs recorded, sorted."""
    names = {k for recs in variants.values() for r in recs for k in r.metrics if SMOOTHNESS_METRIC.match(k)}
    return sorted(names)


def source_metrics(variants: Mapping[str, Sequence[Run]]) -> list[str]:
    """The per-source UCI accuracies (``uci_test_accuracy_<source>``) the group's runs recorded."""
    names = {k for recs in variants.values() for r in recs for k in r.metrics if SOURCE_METRIC.match(k)}
    return sorted(names)


def runs_frame(variants: Mapping[str, Sequence[Run]]):
    """One row per run of a group: variant, algo, tag, seed, role (``line``: a size-curve run;
    ``band``: plain; ``point``: any other regularized run), eps (curve runs), size (measured
    relative perturbation), reg_share, and every metric the runs recorded."""
    import pandas as pd

    rows = []
    for variant, recs in variants.items():
        for r in recs:
            eps = curve_eps(r.tag)
            role = "band" if r.algo == "plain" else ("line" if eps is not None else "point")
            rows.append(
                {
                    "variant": variant,
                    "algo": r.algo,
                    "tag": r.tag or "",
                    "seed": r.seed,
                    "role": role,
                    "eps": eps,
                    "family": curve_family(r.tag),
                    "size": relative_size(r) if r.algo != "plain" else math.nan,
                    "reg_share": regularizer_share(r) if r.algo != "plain" else math.nan,
                    **{k: (math.nan if v is None else float(v)) for k, v in r.metrics.items()},
                }
            )
    return pd.DataFrame(rows)
