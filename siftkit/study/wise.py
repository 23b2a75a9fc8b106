"""WiSE-FT runs in a summary: the alpha each run chose on validation, its metrics there and at
alpha = 1 (the fine-tuned model, the run's twin: `siftkit.study.runs.finetuned_twin`), and the
seed-paired difference the interpolation makes, per variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from siftkit.study.metrics import PAPER_METRIC
from siftkit.study.runs import Run, group_fields
from siftkit.study.stats import paired_difference, reading
from siftkit.study.tags import variant_order

WISE_FT_COLUMNS = (
    "task",
    "device",
    "code",
    "model",
    "variant",
    "seed",
    "alpha",
    "scope",
    "select_on",
    "val_at_alpha",
    "val_at_1",
    "test_metric",
    "test_at_alpha",
    "test_at_1",
)
WISE_FT_DIFF_COLUMNS = (
    "task",
    "device",
    "code",
    "model",
    "variant",
    "twin",
    "metric",
    "n",
    "seeds",
    "mean",
    "ci_low",
    "ci_high",
    "reading",
)


def wise_ft_variants(variants: Mapping[str, Sequence[Run]]) -> list[str]:
    """The group's variants whose runs chose an alpha (``wise_ft`` in their record)."""
    return sorted(
        (v for v, recs in variants.items() if isinstance(recs[0].record.get("wise_ft"), dict)), key=variant_order
    )


def wise_ft_rows(key: tuple[str, str, str, str], variants: Mapping[str, Sequence[Run]]) -> list[dict[str, Any]]:
    """One row per WiSE-FT run (`WISE_FT_COLUMNS`): the chosen alpha, the validation metric it was
    chosen on and the protocol's test metric, at that alpha and at alpha = 1."""
    test = PAPER_METRIC[key[0]]
    rows = []
    for v in wise_ft_variants(variants):
        for run in variants[v]:
            wise = run.record["wise_ft"]
            select_on, finetuned = wise.get("select_on"), wise.get("finetuned") or {}
            rows.append(
                {
                    **group_fields(key),
                    "variant": v,
                    "seed": run.seed,
                    "alpha": wise.get("alpha"),
                    "scope": wise.get("scope"),
                    "select_on": select_on,
                    "val_at_alpha": run.metric(select_on),
                    "val_at_1": finetuned.get(select_on),
                    "test_metric": test,
                    "test_at_alpha": run.metric(test),
                    "test_at_1": finetuned.get(test),
                }
            )
    return rows


def wise_ft_differences(key: tuple[str, str, str, str], variants: Mapping[str, Sequence[Run]]) -> list[dict[str, Any]]:
    """Per WiSE-FT variant, its test metric minus its twin's (alpha = 1), seed-paired: the
    interpolation's effect on identically trained models (`WISE_FT_DIFF_COLUMNS`)."""
    test = PAPER_METRIC[key[0]]
    twins = {recs[0].record.get("twin_of"): v for v, recs in variants.items() if recs[0].record.get("twin_of")}
    rows = []
    for v in wise_ft_variants(variants):
        twin = twins.get(v)
        if twin is None:
            continue
        d = paired_difference(
            {r.seed: r.metric(test) for r in variants[v]}, {r.seed: r.metric(test) for r in variants[twin]}
        )
        rows.append(
            {
                **group_fields(key),
                "variant": v,
                "twin": twin,
                "metric": test,
                "n": d["n"],
                "seeds": d["seeds"],
                "mean": d["mean"],
                "ci_low": d["low"],
                "ci_high": d["high"],
                "reading": reading(d),
            }
        )
    return rows
