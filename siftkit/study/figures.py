"""Figures of a study, drawn from grouped runs (`siftkit.study.runs.group_runs`; used by `siftkit
summarize` and notebook 04), in the kit's style (`siftkit.study.style`). One set per group of comparable runs (task, device, code, model);
file names start with ``<task>_<device>_<commit>``:

- ``..._scores.png``: the main metric per variant (bar: mean over seeds, dots: seeds), the
  paper's BERT / DeBERTa figures as markers beside plain, SMART and SiFT;
- ``..._learning_curves.png``: task loss against the optimizer step, per seed smoothed within
  each stage, mean over seeds with a 95% t band, the P2 stage boundary marked;
- ``..._size_<metric>.png``, ``..._size_reg_share.png``, ``..._size_smoothness.png``: a metric
  against the measured mean relative perturbation (log x), drawn by `size_curve`: the
  size-curve runs (tags ``curve_eps<E>``) of SMART and SiFT as two lines with 95% t bands over
  seeds, plain as a horizontal band (mean ± 95% CI), every other regularized variant as a
  marked, labelled point (mean x, mean y, 95% CI bars); in an equal-budget group, the arms'
  grid points that validation did not choose and runs at a fixed setting instead of a chosen
  point are left out (`off_the_chosen_points`);
- ``..._tuned_curve_<metric>.png``: the size curve run at the reference arm's chosen point of an
  equal-budget study (`siftkit.study.budget.tuned_curve`, read from the group's `siftkit.study.report.GroupReport`), that point as the band;
- ``<task>_curves_by_group.png`` (`curves_by_group_figure`): beside that curve, every other
  group's size curve of the same task, one panel per group and curve, each titled with its group
  (never two groups on one axis).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.lines
import matplotlib.patches
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from siftkit.run.config import DEFAULT_MODEL_NAME
from siftkit.study.arms import EqualBudget, equal_budget
from siftkit.study.measured import runs_frame, smoothness_metrics
from siftkit.study.paper import PAPER_METRIC, PAPER_RESULTS
from siftkit.study.report import GroupReport, analyse_group
from siftkit.study.runs import MAIN_EVAL, Groups, Run, run_extra, short_commit
from siftkit.study.spec import Specs, learning_curve_variants, point_markers
from siftkit.study.stats import mean_ci, t_interval
from siftkit.study.style import ALGO_COLORS, ALGO_LABELS, DEFAULT_MARKERS, METRIC_AXIS_LABELS, SPARE_MARKERS, SUMMARY_RC
from siftkit.study.tags import point_kind, variant_order


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_").lower()


def _task_name(task: str) -> str:
    if task.startswith("shift:"):  # a shift spec's group, shift:<name>@<hash>
        return "shift " + task.removeprefix("shift:").split("@")[0]
    return "P2 Twitter→UCI" if task == "twitter_to_uci" else "P1 CoLA"


def _markers(kinds: Sequence[str], named: Mapping[str, str]) -> dict[str, str]:
    """A marker per kind of point: the named ones, then the spare ones in name order."""
    named = {**DEFAULT_MARKERS, **named}
    spare = iter(SPARE_MARKERS)
    return {k: named.get(k) or next(spare, "o") for k in sorted(set(kinds))}


def _save(fig: Figure, path: Path) -> Path:
    with matplotlib.rc_context(SUMMARY_RC):
        fig.savefig(path, format="png", bbox_inches="tight")
    return path


# ----------------------------------------------------------------------------- the size figure


def size_curve(
    frame: pd.DataFrame,
    y: str,
    *,
    ax: Axes,
    plain: str | None = "plain",
    logy: bool = False,
    ylabel: str | None = None,
    legend: Mapping[str, Any] | None = None,
    markers: Mapping[str, str] | None = None,
) -> Axes:
    """Draw `y` against the measured mean relative perturbation (log x) on `ax`.

    `frame` is `siftkit.study.measured.runs_frame` of one group. Lines: rows with role ``line``
    (the size-curve runs), one per algorithm, x = the variant's mean measured size over seeds, y =
    mean over seeds with a 95% t band (seaborn, interval from scipy). Band: the `plain`
    variant's mean ± 95% CI. Points: rows with role ``point``, one marker per variant with
    95% t error bars on both axes (`markers`: kind -> marker, `siftkit.study.spec.point_markers`).
    With `logy`, values ≤ 0 cannot be drawn and are left out (the legend says how many).
    `legend`: where the legend goes (``ax.legend`` keywords; default beside the axes, on the
    right). Returns `ax` (its lines and containers are what a test checks).
    """
    if y not in frame:  # no run recorded it (older runs): an empty panel that says so
        frame = frame.assign(**{y: math.nan})
    drawable, dropped = _drawable(frame[y], logy)
    sized = drawable & frame["size"].gt(0)
    _draw_curves(ax, frame[sized & frame["role"].eq("line")], y, logy)
    band_label = _draw_band(ax, frame[drawable & frame["variant"].eq(plain)][y], plain) if plain else None
    _draw_points(ax, frame[sized & frame["role"].eq("point")], y, logy, markers or {})
    _label_axes(ax, y, logy, ylabel)
    _draw_legend(ax, y, band_label, dropped, legend)
    return ax


def _drawable(values: pd.Series, logy: bool) -> tuple[pd.Series, int]:
    """Which values can be drawn, and how many of them a log axis leaves out (≤ 0)."""
    have = values.notna()
    if not logy:
        return have, 0
    return have & values.gt(0), int((have & values.le(0)).sum())


def _draw_curves(ax: Axes, lines: pd.DataFrame, y: str, logy: bool) -> None:
    """SMART's and SiFT's size curves, each size at its mean measured size over seeds."""
    lines = lines.assign(x=lines.groupby("variant")["size"].transform("mean"))
    for algo in ("smart", "sift"):
        sub = lines[lines["algo"] == algo]
        if sub.empty:
            continue
        n = sub.groupby("variant")["seed"].nunique()
        seeds = f"n={n.min()}–{n.max()}" if n.min() != n.max() else f"n={n.min()}"
        sns.lineplot(
            data=sub,
            x="x",
            y=y,
            errorbar=_log_safe if logy else t_interval,
            marker="o",
            color=ALGO_COLORS[algo],
            ax=ax,
            err_kws={"alpha": 0.18},
            label=f"{ALGO_LABELS[algo]} size curve, projected rule ({len(n)} size{'s' if len(n) != 1 else ''}, {seeds})",
        )


def _draw_band(ax: Axes, band: pd.Series, plain: str) -> str | None:
    """The plain variant's mean as a dashed line over its 95% CI; its legend label (None: no runs)."""
    if band.empty:
        return None
    ci = mean_ci(band.tolist())
    ax.axhline(ci["mean"], color=ALGO_COLORS["plain"], ls="--", lw=1.2)
    if not math.isnan(ci["low"]):
        ax.axhspan(ci["low"], ci["high"], color=ALGO_COLORS["plain"], alpha=0.15, lw=0)
    return f"{plain} (n={ci['n']}): mean ± 95% CI"


def _draw_points(ax: Axes, points: pd.DataFrame, y: str, logy: bool, markers: Mapping[str, str]) -> None:
    """Every other regularized variant as one marked point with 95% t bars on both axes,
    SMART's before SiFT's, points of nearly one size drawn beside each other."""
    marker = _markers([point_kind(t or None) for t in points["tag"]], markers)
    groups = sorted(points.groupby("variant"), key=lambda kv: variant_order(kv[0]))
    shift = _dodge([mean_ci(g["size"].tolist())["mean"] for _, g in groups])
    for (_, g), factor in zip(groups, shift):
        algo, tag = g["algo"].iloc[0], g["tag"].iloc[0] or None
        xs, ys = mean_ci(g["size"].tolist()), mean_ci(g[y].tolist())
        xs = {k: v * factor for k, v in xs.items() if k != "n"}  # drawn beside its neighbours, not on them
        ax.errorbar(
            xs["mean"],
            ys["mean"],
            xerr=_err(xs, floor=xs["mean"] / 10),
            yerr=_err(ys, floor=ys["mean"] / 10 if logy else None),
            fmt=marker[point_kind(tag)],
            color=ALGO_COLORS.get(algo, "black"),
            ms=9 if tag is None else 7,
            mec="black",
            mew=0.6,
            capsize=2,
            elinewidth=1,
            label=f"{ALGO_LABELS.get(algo, algo)} {tag or 'default'} (n={ys['n']})",
        )


def _label_axes(ax: Axes, y: str, logy: bool, ylabel: str | None) -> None:
    ax.set_xscale("log")
    ax.margins(x=0.1)  # the outermost points and their labels off the frame
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("measured mean relative perturbation ‖Δ_t‖ / ‖z_t‖ (log scale)")
    ax.set_ylabel(ylabel or METRIC_AXIS_LABELS.get(y, y))


def _draw_legend(ax: Axes, y: str, band_label: str | None, dropped: int, legend: Mapping[str, Any] | None) -> None:
    """The curves, the band (its shade under its dashed line, after the curves), the points and
    how many values the log axis left out; a note in the panel when nothing was drawn."""
    handles, labels = ax.get_legend_handles_labels()
    if band_label:
        pos = sum("size curve" in x for x in labels)
        handles.insert(
            pos,
            (
                matplotlib.patches.Patch(color=ALGO_COLORS["plain"], alpha=0.15, lw=0),
                matplotlib.lines.Line2D([], [], color=ALGO_COLORS["plain"], ls="--", lw=1.2),
            ),
        )
        labels.insert(pos, band_label)
    if dropped:
        handles.append(matplotlib.lines.Line2D([], [], ls=""))
        labels.append(f"({dropped} run(s) at ≤ 0 not drawn on the log axis)")
    if handles:
        ax.legend(
            handles,
            labels,
            **{"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8, "frameon": False, **(legend or {})},
        )
    else:
        ax.text(0.5, 0.5, f"no run recorded {y}", transform=ax.transAxes, ha="center", color="grey")


def _log_safe(values) -> tuple[float, float]:
    """`t_interval` with its lower end kept above a tenth of the mean: a band reaching 0 or
    below cannot be drawn on a log axis (the tables give the interval itself)."""
    low, high = t_interval(values)
    mean = float(sum(values)) / len(values)
    return (max(low, mean / 10), high) if mean > 0 else (low, high)


def _dodge(xs: Sequence[float], within: float = 1.3, step: float = 0.035) -> list[float]:
    """Multiplicative x offsets that spread points closer than `within` (a factor) apart:
    each cluster is fanned out by 10**step per point around its place (log axis). Only the
    drawing moves; tables report the measured means."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    factors = [1.0] * len(xs)
    cluster: list[int] = []
    for i in order + [None]:
        if i is not None and cluster and xs[i] <= xs[cluster[0]] * within:
            cluster.append(i)
            continue
        for k, j in enumerate(cluster):
            factors[j] = 10 ** (step * (k - (len(cluster) - 1) / 2))
        cluster = [i] if i is not None else []
    return factors


def _err(ci: Mapping[str, float], floor: float | None = None):
    """Asymmetric error bar from a t interval; None without one. On a log axis the lower end
    is kept above `floor` so an interval reaching 0 still draws."""
    if math.isnan(ci["low"]):
        return None
    low = max(ci["low"], floor) if floor is not None and floor > 0 else ci["low"]
    return [[max(ci["mean"] - low, 0.0)], [max(ci["high"] - ci["mean"], 0.0)]]


def wants_size_figures(frame: pd.DataFrame) -> bool:
    """Size figures say something once there is a curve, or two regularized variants with sizes."""
    sized = frame[frame["size"].gt(0)]
    return bool(sized["role"].eq("line").any() or sized["variant"].nunique() >= 2)


def off_the_chosen_points(variants: Mapping[str, Sequence[Run]], task: str) -> set[str]:
    """In an equal-budget group, the variants at no chosen point: the grid points validation did
    not choose, and runs at a fixed setting instead of an arm's chosen point (the controls at the
    old gap's rate). Drawn against the band of tuned plain, they would compare a setting no arm
    kept with the one plain kept. Empty for a group without grid arms."""
    return _off_chosen(variants, equal_budget(variants, task))


def _off_chosen(variants: Mapping[str, Sequence[Run]], eb: EqualBudget | None) -> set[str]:
    """`off_the_chosen_points` given the group's `equal_budget`."""
    if eb is None:
        return set()
    chosen = {a.chosen for a in eb.arms}
    points = {p.variant for a in eb.arms for p in a.points}
    return {
        v
        for v, recs in variants.items()
        if v not in chosen and (v in points or not isinstance(run_extra(recs[0]).get("at_chosen"), dict))
    }


def _report(
    key: tuple[str, str, str, str], variants: Mapping[str, Sequence[Run]], specs: Specs, report: GroupReport | None
) -> GroupReport:
    """The group's report as the caller computed it, else computed here."""
    return report if report is not None else analyse_group(key, variants, specs)


def size_figures(
    key: tuple[str, str, str, str],
    variants: Mapping[str, Sequence[Run]],
    specs: Specs = (),
    report: GroupReport | None = None,
) -> dict[str, Figure]:
    """The group's size figures by file suffix: the main metric, R's share of the objective,
    and held-out smoothness on the protocol's main evaluation set (one panel per probe); the
    points' markers as the study specs name them. `report`: the group's `analyse_group`, where
    the caller has it."""
    task, device, commit, model = key
    report = _report(key, variants, specs, report)
    frame = runs_frame(variants)
    unchosen = _off_chosen(variants, report.equal_budget)
    frame = frame[~frame["variant"].isin(unchosen)]
    if frame.empty or not wants_size_figures(frame):
        return {}
    plain = report.reference_plain
    where = f"{_task_name(task)} — {model} on {device}, code {short_commit(commit)}"
    if unchosen:
        where += "; runs at no chosen point left out"
    main = PAPER_METRIC[task]
    markers = point_markers(specs)
    figs: dict[str, Figure] = {}

    fig = Figure(figsize=(11, 5), layout="constrained")
    ax = size_curve(frame, main, ax=fig.subplots(), plain=plain, markers=markers)
    ax.set_title(f"{METRIC_AXIS_LABELS.get(main, main)} against perturbation size\n{where}")
    figs[f"size_{main}"] = fig

    fig = Figure(figsize=(11, 5), layout="constrained")
    ax = size_curve(frame, "reg_share", ax=fig.subplots(), plain=None, logy=True, markers=markers)
    ax.set_title(f"How much of the objective the regularizer is\n{where}")
    figs["size_reg_share"] = fig

    probes = [m for m in smoothness_metrics(variants) if m.startswith(MAIN_EVAL[task] + "_smoothness_")]
    if probes:
        fig = Figure(figsize=(7 * len(probes) + 3, 5), layout="constrained")
        axes = fig.subplots(1, len(probes), squeeze=False)[0]
        for ax, metric in zip(axes, probes):
            size_curve(
                frame,
                metric,
                ax=ax,
                plain=plain,
                logy=True,
                markers=markers,
                ylabel=f"sym-KL(clean, probe {metric.rsplit('_', 1)[1]}) on {MAIN_EVAL[task]}",
            )
            ax.set_title(f"probe of relative size {metric.rsplit('_', 1)[1]}")
            if ax is not axes[-1] and ax.get_legend():
                ax.get_legend().remove()  # one legend for the figure: the panels share it
        fig.suptitle(f"Held-out smoothness (lower = smoother) against training perturbation size\n{where}")
        figs["size_smoothness"] = fig
    return figs


# ----------------------------------------------------------------------------- the curve at the tuned point


def _curve_frame(variants: Mapping[str, Sequence[Run]], family: str, band: str | None) -> pd.DataFrame:
    """`runs_frame` rows of one curve family (as lines) and of the band variant only."""
    frame = runs_frame(variants)
    keep = (frame["role"].eq("line") & frame["family"].eq(family)) | frame["variant"].eq(band)
    return frame[keep]


def _panels(report: GroupReport) -> list[tuple[str, str | None, str]]:
    """(family, band variant, what the band is) per size curve of a group: the curve at the
    reference arm's chosen point with that point as its band; any other curve with the group's
    reference plain."""
    tc = report.budget.tuned_curve
    tuned = tc.families if tc else ()
    out = []
    for family in sorted({f for f in runs_frame(report.variants)["family"].dropna()}):
        if family in tuned:
            ref = tc.reference
            out.append((family, ref.chosen, f"{ref.arm} at its chosen {ref.chosen_label}"))
        else:
            plain = report.reference_plain
            out.append((family, plain, f"{plain}"))
    return out


def _group_title(key: tuple[str, str, str, str]) -> str:
    task, device, commit, model = key
    return f"{_task_name(task)} — {model} on {device}, code {short_commit(commit)}"


def tuned_curve_figure(
    key: tuple[str, str, str, str],
    variants: Mapping[str, Sequence[Run]],
    specs: Specs = (),
    report: GroupReport | None = None,
) -> Figure | None:
    """The size curve at the reference arm's chosen point, that point drawn as the band; None
    when the group has no such curve."""
    tc = _report(key, variants, specs, report).budget.tuned_curve
    if tc is None:
        return None
    main, ref = PAPER_METRIC[key[0]], tc.reference
    fig = Figure(figsize=(11, 5), layout="constrained")
    ax = fig.subplots()
    for family in tc.families:
        size_curve(
            _curve_frame(variants, family, ref.chosen), main, ax=ax, plain=ref.chosen, markers=point_markers(specs)
        )
    ax.set_title(
        f"{METRIC_AXIS_LABELS.get(main, main)} against perturbation size at {ref.arm}'s chosen "
        f"{ref.chosen_label} (band: that point)\n{_group_title(key)}"
    )
    return fig


def curves_by_group_figure(
    groups: Groups, task: str, specs: Specs = (), reports: Mapping[tuple, GroupReport] | None = None
) -> Figure | None:
    """Every size curve of `task`, one panel per (group, curve), each titled with its group;
    the panels share the y axis so the eye can compare levels, never the runs. `reports`: the
    groups' `analyse_group`, where the caller has them."""
    panels = [
        (key, variants, *p)
        for key, variants in groups.items()
        if key[0] == task
        for p in _panels(_report(key, variants, specs, (reports or {}).get(key)))
    ]
    if len(panels) < 2:
        return None
    main = PAPER_METRIC[task]
    fig = Figure(figsize=(6.5 * len(panels), 5.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (key, variants, family, band, what) in zip(axes, panels):
        # each panel's legend under it: the panels stand side by side
        size_curve(
            _curve_frame(variants, family, band),
            main,
            ax=ax,
            plain=band,
            markers=point_markers(specs),
            legend={"loc": "upper left", "bbox_to_anchor": (0.0, -0.14), "fontsize": 7},
        )
        name = f"{family}_curve_eps<E>" if family else "curve_eps<E>"
        ax.set_title(f"{_group_title(key)}\n`{name}`, band: {what}", fontsize=9)
    fig.suptitle(
        f"{METRIC_AXIS_LABELS.get(main, main)} against measured perturbation size, one panel per group of "
        "comparable runs"
    )
    return fig


def write_curves_by_group(
    groups: Groups, out_dir: str | Path, specs: Specs = (), reports: Mapping[tuple, GroupReport] | None = None
) -> dict[tuple, Path]:
    """``<task>_curves_by_group.png`` for each task that has a curve at a tuned point, keyed by
    the group of that curve (where the summary links it)."""
    reports = {key: _report(key, variants, specs, (reports or {}).get(key)) for key, variants in groups.items()}
    out: dict[tuple, Path] = {}
    for key in groups:
        if reports[key].budget.tuned_curve is None:
            continue
        fig = curves_by_group_figure(groups, key[0], specs, reports)
        if fig is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            out[key] = _save(fig, Path(out_dir) / f"{figure_prefix(key)}_curves_by_group.png")
    return out


# ----------------------------------------------------------------------------- scores and learning curves


def scores_figure(key: tuple[str, str, str, str], variants: Mapping[str, Sequence[Run]]) -> Figure:
    task, device, commit, model = key
    metric = PAPER_METRIC[task]
    names = sorted(variants, key=variant_order)
    rows = [
        {"variant": v, "algo": r.algo, "seed": r.seed, "value": r.metric(metric)} for v in names for r in variants[v]
    ]
    frame = pd.DataFrame(rows)
    fig = Figure(figsize=(8, 0.32 * len(names) + 1.8), layout="constrained")
    ax = fig.subplots()
    # Seeds as dots, the mean with its 95% t interval as a bar: no bars from 0, which would
    # flatten differences of a few points into equal lengths.
    # seaborn jitters from numpy's global RNG: a fixed seed keeps a regenerated figure identical
    # (no spurious change in git when the runs have not changed); the caller's state is restored.
    rng_state = np.random.get_state()
    np.random.seed(0)
    try:
        sns.stripplot(
            data=frame,
            y="variant",
            x="value",
            order=names,
            color="#34495e",
            size=3.5,
            alpha=0.7,
            ax=ax,
            label="one seed",
            jitter=0.15,
        )
    finally:
        np.random.set_state(rng_state)
    for i, name in enumerate(names):
        ci = mean_ci(frame.loc[frame["variant"] == name, "value"].tolist())
        ax.errorbar(
            ci["mean"],
            i,
            xerr=_err(ci),
            fmt="o",
            ms=7,
            color=ALGO_COLORS.get(variants[name][0].algo, "black"),
            mec="black",
            mew=0.6,
            capsize=3,
            zorder=5,
            label="mean ± 95% CI over seeds" if i == 0 else None,
        )
    for i, name in enumerate(names):
        algo = variants[name][0].algo
        if name == algo and algo in PAPER_RESULTS["bert"].get(task, {}):  # a shift spec has no paper figure
            for paper, color in (("bert", "#e67e22"), ("deberta", "#2c3e50")):
                ax.scatter(
                    [PAPER_RESULTS[paper][task][algo]],
                    [i],
                    marker="|",
                    s=250,
                    color=color,
                    zorder=4,
                    label=f"paper, {'BERT' if paper == 'bert' else 'DeBERTa'}-base" if name == "plain" else None,
                )
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel(METRIC_AXIS_LABELS.get(metric, metric))
    ax.set_ylabel("")
    ax.set_title(f"{_task_name(task)} — {model} on {device}, code {short_commit(commit)}")
    return fig


def _smooth(values: list[float], width: int) -> list[float]:
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - width // 2), min(len(values), i + width // 2 + 1)
        out.append(sum(values[lo:hi]) / (hi - lo))
    return out


def _loss_rows(name: str, runs: Sequence[Run], rule: str) -> list[dict[str, Any]]:
    """One variant's logged task losses, each run's smoothed within a stage only (the label
    meaning changes at a stage boundary)."""
    rows = []
    for run in runs:
        hist = [row for row in run.record["history"] if row.get("task_loss") is not None]
        for stage in dict.fromkeys(row.get("stage") for row in hist):
            part = [row for row in hist if row.get("stage") == stage]
            for row, v in zip(part, _smooth([row["task_loss"] for row in part], 5)):
                rows.append(
                    {
                        "variant": f"{name} (n={len(runs)})",
                        "step": row.get("global_step", row.get("step")),
                        "task_loss": v,
                        "rule": rule,
                    }
                )
    return rows


def learning_curves_figure(
    key: tuple[str, str, str, str], variants: Mapping[str, Sequence[Run]], specs: Specs = ()
) -> Figure | None:
    """Task loss over optimizer steps of plain, SMART and SiFT at their defaults and of the
    variants the study specs add (`siftkit.study.spec.learning_curve_variants`), one line style
    per label the specs give; None when none of them logged a task loss."""
    task, device, commit, model = key
    drawn = {**{algo: "default rule" for algo in ("plain", "smart", "sift")}, **learning_curve_variants(specs)}
    names = [n for n in drawn if n in variants]
    rows = [row for name in names for row in _loss_rows(name, variants[name], drawn[name])]
    if not rows:
        return None
    fig = Figure(figsize=(8, 4.4), layout="constrained")
    ax = fig.subplots()
    frame = pd.DataFrame(rows)
    palette = {label: ALGO_COLORS[label.split("-")[0].split(" ")[0]] for label in frame["variant"].unique()}
    sns.lineplot(
        data=frame,
        x="step",
        y="task_loss",
        hue="variant",
        style="rule",
        palette=palette,
        errorbar=t_interval,
        err_kws={"alpha": 0.15},
        ax=ax,
    )
    first = variants[names[0]][0].record["history"]
    for prev, row in zip(first, first[1:]):
        if row.get("stage") != prev.get("stage"):  # P2: Twitter -> UCI, the label meaning changes
            ax.axvline(prev["global_step"], color="grey", ls="--", lw=1)
            ax.text(
                prev["global_step"],
                0.98,
                f" {row['stage']} stage →",
                va="top",
                fontsize=8,
                color="grey",
                transform=ax.get_xaxis_transform(),
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("task cross-entropy (nats), moving average of 5 logs")
    ax.set_title(f"Learning curves (mean over seeds, 95% t band) — {task} on {device}, code {short_commit(commit)}")
    return fig


def figure_prefix(key: tuple[str, str, str, str]) -> str:
    """``<task>_<device>_<commit>`` (plus the model when it is not the kit's default)."""
    task, device, commit, model = key
    # A shift spec's group name holds ':' and '@' (shift:<name>@<hash>): slugged for a file name.
    task = _slug(task) if task.startswith("shift:") else task
    prefix = f"{task}_{_slug(device)}_{_slug(short_commit(commit))}"
    if model != DEFAULT_MODEL_NAME:  # the kit's default model keeps the names short
        prefix += f"_{_slug(Path(model).name)}"
    return prefix


def write_group_figures(
    key: tuple[str, str, str, str],
    variants: Mapping[str, Sequence[Run]],
    out_dir: str | Path,
    specs: Specs = (),
    report: GroupReport | None = None,
) -> list[Path]:
    """One group's figures as PNGs in `out_dir` (created); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = figure_prefix(key)
    report = _report(key, variants, specs, report)
    figs = {
        "scores": scores_figure(key, variants),
        "learning_curves": learning_curves_figure(key, variants, specs),
        **size_figures(key, variants, specs, report),
        f"tuned_curve_{PAPER_METRIC[key[0]]}": tuned_curve_figure(key, variants, specs, report),
    }
    return [_save(fig, out_dir / f"{prefix}_{name}.png") for name, fig in figs.items() if fig is not None]


# ----------------------------------------------------------------------------- the leaderboard


def forest_figure(board: Any, shift: str) -> Figure | None:
    """One shift's forest plot: each arm's seed-paired difference from tuned plain (mean, 95% t
    interval) on each of the shift's targets, tuned plain at 0; readable on a slide. `board` is a
    `siftkit.study.leaderboard.Leaderboard`; None where the shift has no judged arm."""
    part = next((s for s in board.shifts if s.shift == shift), None)
    if part is None:
        return None
    arms = [
        a
        for a in board.arms
        if not board.is_reference(a, shift) and any(board.cell(a, shift, m) is not None for m in part.targets)
    ]
    if not arms:
        return None
    with matplotlib.rc_context({**SUMMARY_RC, "font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12}):
        fig = Figure(figsize=(4.2 * len(part.targets) + 1.5, 0.45 * len(arms) + 1.8))
        axes = fig.subplots(1, len(part.targets), sharey=True, squeeze=False)[0]
        for ax, metric in zip(axes, part.targets):
            for y, arm in enumerate(arms):
                c = board.cell(arm, shift, metric)
                if c is None or math.isnan(c.mean):
                    continue
                color = {"better": "#2ca02c", "worse": "#d62728"}.get(c.verdict, "#444444")
                if not math.isnan(c.low):
                    ax.plot([c.low, c.high], [y, y], color=color, lw=2)
                ax.plot([c.mean], [y], "o", color=color, ms=7)
            ax.axvline(0, color=ALGO_COLORS["plain"], lw=1.2, ls="--")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5, symmetric=True))
            ax.set_title(metric.removesuffix("_accuracy") if len(part.targets) > 1 else metric)
            ax.set_xlabel("difference from tuned plain")
        axes[0].set_yticks(range(len(arms)), arms)
        axes[0].invert_yaxis()
        fig.suptitle(f"{shift}: each arm − tuned plain\n(chosen points, seed-paired, 95% CI)")
        fig.tight_layout()
    return fig


def forest_figure_name(shift: str) -> str:
    """The file name of a shift's forest figure (`write_forest_figures`)."""
    return f"leaderboard_{_slug(shift)}.png"


def write_forest_figures(board: Any, out_dir: str | Path) -> dict[str, Path]:
    """``leaderboard_<shift>.png`` for every shift of the board with a judged arm."""
    out = {}
    for part in board.shifts:
        fig = forest_figure(board, part.shift)
        if fig is not None:
            out[part.shift] = _save(fig, Path(out_dir) / forest_figure_name(part.shift))
    return out
