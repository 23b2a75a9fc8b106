"""A run's metrics as a table a student can read: one row per evaluation set, accuracy and MCC
to three decimals, the held-out smoothness probes in their own columns (the only ones in
scientific notation: they are sym-KL values of 1e-7 to 1e-2), per-source rows under their
set, and the run's measured perturbation apart.

`results.json` keeps every metric in one flat mapping (``uci_test_accuracy_amazon``,
``twitter_val_smoothness_0.3``, ``mean_relative_perturbation``); printed as one column they
force one number format on values nine decades apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

_SCORES = ("accuracy", "mcc", "macro_f1")
_SCORE_LABELS = {"accuracy": "accuracy", "mcc": "MCC", "macro_f1": "macro-F1"}
_PROBE = re.compile(r"^(?P<set>.+)_smoothness_(?P<size>[0-9.e+-]+)$")
_SCORE = re.compile(r"^(?P<set>.+?)_(?P<score>accuracy|mcc|macro_f1)(?:_(?P<source>[A-Za-z0-9]+))?$")
_RUN_LEVEL = {
    "mean_relative_perturbation": "mean ‖Δ_t‖/‖z_t‖ (training)",
    "mean_perturbation_norm": "mean ‖Δ_t‖ (training, raw units)",
    "mean_ascent_cosine": "mean cosine of δ with the ascent gradient",
}


def metrics_table(record: Mapping[str, Any]) -> pd.DataFrame:
    """One row per evaluation set (then one per source under it, e.g. ``uci_test · amazon``),
    in the order the run recorded them; columns accuracy, MCC, macro-F1 where present, then
    one ``sym-KL probe <size>`` column per smoothness probe size. Empty cells are NaN."""
    metrics = record.get("metrics", record)
    rows: dict[str, dict[str, float]] = {}
    sources: dict[str, list[str]] = {}
    probes: list[str] = []
    for key, value in metrics.items():
        if key in _RUN_LEVEL or not isinstance(value, (int, float)):
            continue
        probe = _PROBE.match(key)
        if probe:
            column = f"sym-KL probe {probe['size']}"
            probes.append(column) if column not in probes else None
            rows.setdefault(probe["set"], {})[column] = float(value)
            continue
        score = _SCORE.match(key)
        if not score:
            continue
        name = score["set"] if not score["source"] else f"{score['set']} · {score['source']}"
        if score["source"]:
            sources.setdefault(score["set"], []).append(name) if name not in sources.get(score["set"], []) else None
        rows.setdefault(name, {})[_SCORE_LABELS[score["score"]]] = float(value)
    order = []
    for name in rows:
        if " · " in name:
            continue
        order.append(name)
        order.extend(sources.get(name, []))
    order.extend(n for n in rows if n not in order)
    columns = [_SCORE_LABELS[s] for s in _SCORES if any(_SCORE_LABELS[s] in r for r in rows.values())] + probes
    table = pd.DataFrame([rows[n] for n in order], index=pd.Index(order, name="evaluation set"), columns=columns)
    return table


def run_level(record: Mapping[str, Any]) -> pd.Series:
    """The run's measured perturbation (SMART and SiFT): mean size and ascent cosine."""
    metrics = record.get("metrics", record)
    return pd.Series(
        {
            label: float(metrics[key])
            for key, label in _RUN_LEVEL.items()
            if isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key])
        },
        name="value",
        dtype=float,
    )


def metrics_style(table: pd.DataFrame):
    """`metrics_table` formatted: scores to three decimals, probes in scientific notation,
    empty cells blank."""
    probes = [c for c in table.columns if c.startswith("sym-KL probe")]
    scores = [c for c in table.columns if c not in probes]
    style = table.style.format("{:.3f}", subset=scores, na_rep="").format("{:.1e}", subset=probes, na_rep="")
    caption = "accuracy, MCC: higher is better"
    if probes:
        caption += (
            "; sym-KL probe s: mean sym-KL between clean predictions and predictions under a fixed random "
            "push of relative size s (lower = smoother)"
        )
    return style.set_caption(caption)


def show_metrics(record: Mapping[str, Any]):
    """The notebooks' metrics cell: the per-set table (styled), and the run-level numbers below
    it when the run perturbed its inputs."""
    from IPython.display import display

    level = run_level(record)
    if (level != 0).any():  # plain records zeros: it perturbs nothing
        display(level.to_frame().style.format("{:.3g}").set_caption("the run's measured perturbation"))
    return metrics_style(metrics_table(record))
