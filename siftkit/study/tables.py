"""The notebooks' tables of runs, over the same loaded and checked runs as the summary
(`siftkit.study.runs`): one row per run (`results_frame`), mean ± std over seeds per group and
metric (`results_table`), and the paper's Tables 1 and 2 layout (`paper_table`,
`format_paper_table`).

Unlike the summary's groups, these group by task, model, algorithm and variant across devices
and code, as the paper's tables do; ``differs`` names the settings that vary inside a group."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from siftkit.run.config import DEFAULT_MODEL_NAME, RunConfig
from siftkit.study.paper import PAPER_METRIC, PAPER_RESULTS, TASK_METRICS
from siftkit.study.runs import SETTINGS_THAT_MAY_DIFFER, Run, load_run, run_from_record
from siftkit.study.stats import format_mean_std, mean_ci
from siftkit.study.style import ALGO_LABELS

# Config fields that make a run a *variant* of its algorithm (shown in the tables).
VARIANT_FIELDS = (
    "perturb_at",
    "adv_rule",
    "bregman_weight",
    "adv_epsilon",
    "adv_noise_std",
    "adv_step_size",
    "adv_steps",
    "adv_norm",
    "adv_weight",
    "divergence",
)
STATS_COLUMNS = ("metric", "mean", "std", "n", "seeds", "differs", "paper_bert", "paper_deberta")


def model_label(model_name: str | None) -> str:
    """A short name for a model: the offline default's, a random model's, a path's last part."""
    if model_name is None:
        return DEFAULT_MODEL_NAME
    name = str(model_name)
    return name if name.startswith("random:") else Path(name.rstrip("/")).name or name


def _variant(cfg: dict[str, Any]) -> str:
    """A run's variant label: its sweep tag when it has one (``curve_eps0.3``, ``mtdnn``),
    else the knobs that differ from the algorithm's defaults."""
    tag = (cfg.get("extra") or {}).get("tag")
    if tag:
        return str(tag)
    algo = cfg.get("algo", "plain")
    defaults = RunConfig(algo=algo).to_dict()
    parts = []
    for name in VARIANT_FIELDS:
        if algo == "plain" or (name.startswith("bregman") and algo != "smart"):
            continue  # knobs the algorithm does not use
        if name in cfg and cfg[name] != defaults[name]:
            parts.append(f"{name}={cfg[name]}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- one row per run


def _as_run(source: Run | str | Path | Mapping[str, Any]) -> Run:
    if isinstance(source, Run):
        return source
    if isinstance(source, Mapping):
        return run_from_record(dict(source))
    return load_run(source)


def _run_row(run: Run) -> dict[str, Any]:
    cfg, meta = run.record["config"], run.record.get("meta", {})
    row = {
        "path": None if run.path is None else str(run.path),
        "task": cfg["task"],
        "algo": cfg["algo"],
        "model": model_label(cfg.get("model_name")),
        "variant": _variant(cfg),
        "seed": cfg["seed"],
    }
    row.update(run.metrics)
    row.update(
        wall_time_s=meta.get("wall_time_s"),
        device=meta.get("device_name") or meta.get("device"),
        git_commit=meta.get("git_commit"),
    )
    row.update({f"cfg.{k}": v for k, v in cfg.items() if k != "extra"})
    return row


def results_frame(sources: Iterable[Run | str | Path | Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run, from loaded runs (`siftkit.study.runs.load_run`), results.json paths, run
    folders or records (the last three read and checked as the summary reads them).

    Columns: path, task (as configured: ``shift`` for a shift spec), algo, model, variant, seed,
    every metric, wall_time_s, device, git_commit, then every config field as ``cfg.<name>``.
    """
    return pd.DataFrame([_run_row(_as_run(src)) for src in sources])


# ----------------------------------------------------------------------------- mean ± std over seeds


def results_table(
    frame: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    by: Sequence[str] = ("task", "model", "algo", "variant"),
) -> pd.DataFrame:
    """Mean ± sample std over seeds (`siftkit.study.stats.mean_ci`), long format: one row per
    group and metric.

    Columns: the `by` keys, metric, mean, std (NaN for one run), n, seeds, and ``differs``:
    config fields (other than seeds and settings that cannot change a result) that vary inside
    the group — non-empty means unlike runs are being averaged. The paper's BERT and DeBERTa
    figures are added as ``paper_bert``/``paper_deberta`` for the metric each paper column reports.
    """
    if frame.empty:
        return pd.DataFrame(columns=[*by, *STATS_COLUMNS])
    if metrics is None:
        metrics = [m for task in TASK_METRICS.values() for m in task]
    cfg_cols = [c for c in frame.columns if c.startswith("cfg.") and c[4:] not in SETTINGS_THAT_MAY_DIFFER]
    rows = []
    for key, group in frame.groupby(list(by), sort=False, dropna=False):
        keys = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        differs = ", ".join(c[4:] for c in cfg_cols if group[c].astype(str).nunique() > 1)
        rows += [
            _stats_row(keys, group, metric, differs)
            for metric in metrics
            if metric in group and not group[metric].isna().all()
        ]
    return pd.DataFrame(rows, columns=[*by, *STATS_COLUMNS])


def _stats_row(keys: Mapping[str, Any], group: pd.DataFrame, metric: str, differs: str) -> dict[str, Any]:
    values = group[metric].dropna().astype(float)
    stat = mean_ci(values.tolist())
    task, algo = keys.get("task", group["task"].iloc[0]), keys.get("algo", group["algo"].iloc[0])
    paper = metric == PAPER_METRIC.get(task)
    return {
        **keys,
        "metric": metric,
        "mean": stat["mean"],
        "std": stat["std"],
        "n": stat["n"],
        "seeds": sorted(int(s) for s in group.loc[values.index, "seed"]),
        "differs": differs,
        "paper_bert": PAPER_RESULTS["bert"][task][algo] if paper else math.nan,
        "paper_deberta": PAPER_RESULTS["deberta"][task][algo] if paper else math.nan,
    }


# ----------------------------------------------------------------------------- the paper's layout


def paper_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's Tables 1 and 2 layout from `results_table`: one row per (model, algo,
    variant), for CoLA (MCC, out_of_domain_dev) and UCI 10% (accuracy) our mean, std, n and the
    paper's BERT and DeBERTa figures. Rows for every algorithm the paper reports, even
    without runs, so the paper's numbers always show."""
    keys = ["model", "algo", "variant"]
    out = pd.DataFrame(list(_paper_rows(table, keys).values()))
    for col, task in (("cola", "cola"), ("uci", "twitter_to_uci")):
        for c in ("mean", "std", "n"):
            if f"{col}_{c}" not in out:
                out[f"{col}_{c}"] = math.nan
        out[f"{col}_paper_bert"] = out["algo"].map(PAPER_RESULTS["bert"][task])
        out[f"{col}_paper_deberta"] = out["algo"].map(PAPER_RESULTS["deberta"][task])
    order = {a: i for i, a in enumerate(ALGO_LABELS)}
    out["_order"] = out["algo"].map(order).fillna(len(order))
    out["_no_runs"] = out["model"] == "(no runs)"  # the paper-only rows go last
    out = out.sort_values(["_no_runs", "model", "_order", "variant"], kind="stable")
    cols = keys + [f"{c}_{s}" for c in ("cola", "uci") for s in ("mean", "std", "n", "paper_bert", "paper_deberta")]
    return out[cols].reset_index(drop=True)


def _paper_rows(table: pd.DataFrame, keys: Sequence[str]) -> dict[tuple, dict[str, Any]]:
    """Our reported metric per (model, algo, variant), a paper-only row for each algorithm without runs."""
    main = table[table["metric"] == table["task"].map(PAPER_METRIC)] if not table.empty else table
    rows: dict[tuple, dict[str, Any]] = {}
    for _, r in main.iterrows():
        key = (r["model"], r["algo"], r["variant"])
        row = rows.setdefault(key, dict(zip(keys, key)))
        col = "cola" if r["task"] == "cola" else "uci"
        row.update({f"{col}_mean": r["mean"], f"{col}_std": r["std"], f"{col}_n": r["n"]})
    for algo in PAPER_RESULTS["bert"]["twitter_to_uci"]:  # the paper's algorithms, not the whole family
        if not any(k[1] == algo for k in rows):
            rows[("(no runs)", algo, "")] = {"model": "(no runs)", "algo": algo, "variant": ""}
    return rows


def format_paper_table(pt: pd.DataFrame) -> pd.DataFrame:
    """`paper_table` as display strings, column names as in the paper."""

    def paper(x: float) -> str:
        return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"

    def ours(col: str) -> list[str]:
        return [format_mean_std(m, s, n) for m, s, n in zip(pt[f"{col}_mean"], pt[f"{col}_std"], pt[f"{col}_n"])]

    return pd.DataFrame(
        {
            "model": pt["model"],
            "algorithm": pt["algo"].map(ALGO_LABELS).fillna(pt["algo"]),
            "variant": pt["variant"],
            "CoLA MCC (ours)": ours("cola"),
            "CoLA paper BERT": pt["cola_paper_bert"].map(paper),
            "CoLA paper DeBERTa": pt["cola_paper_deberta"].map(paper),
            "UCI 10% acc (ours)": ours("uci"),
            "UCI paper BERT": pt["uci_paper_bert"].map(paper),
            "UCI paper DeBERTa": pt["uci_paper_deberta"].map(paper),
        }
    )
