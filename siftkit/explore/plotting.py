"""Figures for the notebooks, drawn from results records and `siftkit.explore.analysis` frames,
in the kit's style (`siftkit.study.style`: the same colours and names as the summary's figures).

Every function returns a `matplotlib.figure.Figure` built without pyplot's global state
(nothing piles up in a loop or a test), with axes labelled and units stated. `show(fig)`
displays one inline, `save_figure(fig, path)` writes a PNG (the notebooks save theirs to
``<output_dir>/figures/``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from siftkit.core.perturbation_specs import BLOCK_ORDER
from siftkit.study.paper import PAPER_METRIC, PAPER_RESULTS, TASK_METRICS
from siftkit.study.style import ALGO_COLORS, ALGO_LABELS, METRIC_TICK_LABELS, NOTEBOOK_RC

DOMAIN_COLORS = {"twitter": "#1f77b4", "uci": "#ff7f0e", "cola": "#2ca02c", "": "#555555"}
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
POINT_LABELS = {
    "word_embeddings": "word_embeddings (W[ids], before LayerNorm)",
    "pre_layernorm": "pre_layernorm (input of the embedding LayerNorm)",
    "embedding_output": "embedding_output (after LayerNorm)",
}


@contextlib.contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(NOTEBOOK_RC):
        yield


def _figure(nrows: int = 1, ncols: int = 1, *, size: tuple[float, float], squeeze: bool = False, **kw):
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **kw)
    return fig, axes


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write `fig` as a PNG at `path` (folders created) and return the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figures are saved as PNG; got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _style():
        fig.savefig(path, dpi=dpi, format="png")
    return path


def show(fig: Figure, *, dpi: int = 100) -> None:
    """Display `fig` inline as a PNG (works under any backend, papermill included)."""
    import io

    try:
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover - IPython ships with the notebook extra
        print(fig)
        return
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format="png", dpi=dpi)
    display(Image(data=buf.getvalue(), format="png"))


def domain_palette(domains: Sequence[str]) -> dict[str, str]:
    """A colour per domain: Twitter, UCI and CoLA keep theirs (`DOMAIN_COLORS`); any other
    name (a shift spec's stages and evaluation sets) takes the next tab10 colour not in use."""
    taken = {DOMAIN_COLORS[d] for d in domains if d in DOMAIN_COLORS}
    free = [c for c in _TAB10 if c not in taken] or list(_TAB10)
    out, i = {}, 0
    for d in dict.fromkeys(domains):
        if d in DOMAIN_COLORS:
            out[d] = DOMAIN_COLORS[d]
        else:
            out[d] = free[i % len(free)]
            i += 1
    return out


def _plain_formatter() -> matplotlib.ticker.Formatter:
    """Tick labels as plain numbers with the digits needed, no offset/exponent text (which
    would collide with a panel's title)."""
    fmt = matplotlib.ticker.ScalarFormatter(useOffset=False)
    fmt.set_scientific(False)
    return fmt


def _tick_format(vmin: float, vmax: float):
    """One format for every tick of an axis: plain numbers where they stay short, else
    scientific for all of them (never ``0.0001`` beside ``5e-05``)."""
    if vmin > 0 and (vmin < 1e-3 or vmax >= 1e4):
        return matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:.0e}")
    return matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:.4g}")


def _scale_y(ax, values, name: str, unit: str = "") -> None:
    """Log scale when the values span more than a decade, else linear from 0.

    A linear axis starts at 0 when no value is negative, so a few percent of variation
    looks like a few percent (auto-scaling would zoom a ±3% wobble to the full height).
    The label says which: ``name (unit, log scale)`` or ``name (unit)``.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) and v.min() > 0 and v.max() / v.min() > 10:  # zeros cannot sit on a log axis
        ax.set_yscale("log")
        # The axis spans whole decades around the data, so a labelled tick sits at or below the
        # smallest value and at or above the largest (auto-limits left 2e-5 and 7e-3 outside
        # the only two labels, 1e-4 and 1e-3).
        ax.set_ylim(*_decades(v))
        if v.max() / v.min() < 1e2:  # up to two decades: label 1, 2 and 5 of each
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        else:
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0,), numticks=12))
        ax.yaxis.set_major_formatter(_tick_format(v.min(), v.max()))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylabel(f"{name} ({unit + ', ' if unit else ''}log scale)")
    else:
        ax.yaxis.set_major_formatter(_plain_formatter())  # no offset text: it would collide with the title
        if len(v) and v.min() >= 0:
            ax.set_ylim(0, v.max() * 1.08 if v.max() > 0 else 1.0)
        ax.set_ylabel(f"{name} ({unit})" if unit else name)


def _decades(v: np.ndarray) -> tuple[float, float]:
    """The whole decades that enclose the positive values `v` ([10^floor, 10^ceil] of their
    logs), with a small margin so that a marker on a decade is not cut by the frame."""
    lo, hi = math.floor(math.log10(float(v.min())) + 1e-9), math.ceil(math.log10(float(v.max())) - 1e-9)
    return 10.0**lo / 1.15, 10.0**hi * 1.15


def _scale_x(ax, values, name: str, unit: str) -> None:
    """Log x when the values span more than a decade, else linear (no offset notation)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) and v.min() > 0 and v.max() / v.min() > 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_tick_format(v.min(), v.max()))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"{name} ({unit}, log scale)")
    else:
        lo, hi = _padded_range(v)
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:.4g}"))
        ax.set_xlabel(f"{name} ({unit})")


def _padded_range(v: np.ndarray) -> tuple[float, float]:
    """The range of `v`, widened to ±5% of its value where it is (nearly) a single value:
    a random smoke model gives every token the same norm after LayerNorm, and ticks 1e-6
    apart would print as one unreadable run of digits."""
    if not len(v):
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 1e-4 * max(abs(hi), abs(lo), 1e-12):
        half = 0.05 * abs(hi) if hi else 0.5
        return lo - half, hi + half
    pad = 0.04 * (hi - lo)
    return lo - pad, hi + pad


def _points(df: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(df["at"]))
    return [p for p in BLOCK_ORDER if p in present] + [p for p in present if p not in BLOCK_ORDER]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------- runs


def _history(source: Any) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, Mapping):
        return pd.DataFrame(source.get("history", []))
    return pd.DataFrame(list(source))


def learning_curves(
    record: Mapping[str, Any] | pd.DataFrame | Sequence[Mapping[str, Any]], *, title: str | None = None
) -> Figure:
    """Task loss, regularizer terms, perturbation size and learning rate over optimizer steps.

    `record` is a results.json record (or its ``history`` as rows / a DataFrame). Stages are
    shaded and named; each point is the mean over the ``logging_steps`` window it closes.
    """
    hist = _history(record)
    cfg = record.get("config", {}) if isinstance(record, Mapping) else {}
    with _style():
        fig, axes = _figure(2, 2, size=(11, 6.5), sharex=True)
        (ax_loss, ax_reg), (ax_rel, ax_lr) = axes
        if hist.empty:
            for ax in axes.flat:
                _empty(ax, "no history")
            return fig
        _loss_panel(ax_loss, hist)
        _regularizer_panel(ax_reg, hist)
        _perturbation_panel(ax_rel, hist, cfg.get("algo"))
        _learning_rate_panel(ax_lr, hist)
        for ax in axes[1]:
            ax.set_xlabel("optimizer step (all stages)")
        _shade_stages(axes, hist)
        label = title or _run_title(cfg)
        if label:
            fig.suptitle(label)
    return fig


def _loss_panel(ax, hist: pd.DataFrame) -> None:
    """The task loss, and the whole objective only where the regularizer visibly adds to it."""
    x = hist["global_step"]
    ax.plot(x, hist["task_loss"], color="#1f77b4", label="task loss (cross-entropy)")
    if "loss" in hist and ((hist["loss"] - hist["task_loss"]).abs() > 0.01 * hist["task_loss"].abs()).any():
        ax.plot(x, hist["loss"], color="#444444", lw=1, ls="--", label="total loss")
    ax.set_ylabel("loss (nats)")
    ax.set_title("training loss")
    ax.legend(loc="best")


def _regularizer_panel(ax, hist: pd.DataFrame) -> None:
    """R and the Bregman term, unweighted; a note for plain fine-tuning, which has neither."""
    drew = False
    for col, label, color in (
        ("adv_loss", "R: adversarial divergence", ALGO_COLORS["sift"]),
        ("bregman_loss", "Bregman term", ALGO_COLORS["smart"]),
    ):
        if col in hist and (hist[col].fillna(0) > 0).any():
            ax.plot(hist["global_step"], hist[col].where(hist[col] > 0), color=color, label=label)
            drew = True
    if drew:
        reg_values = pd.concat([hist[c] for c in ("adv_loss", "bregman_loss") if c in hist])
        _scale_y(ax, reg_values, "divergence", "nats")
        ax.legend()
    else:
        _empty(ax, "no regularizer terms (plain fine-tuning)")
    ax.set_title("regularizer terms (unweighted)")


def _perturbation_panel(ax, hist: pd.DataFrame, algo: str | None) -> None:
    if "relative_perturbation" in hist and (hist["relative_perturbation"].fillna(0) > 0).any():
        ax.plot(hist["global_step"], hist["relative_perturbation"], color=ALGO_COLORS.get(algo, "#9467bd"))
        _scale_y(ax, hist["relative_perturbation"], "mean ‖Δ_t‖ / ‖z_t‖", "ratio")
    else:
        _empty(ax, "no perturbation (plain fine-tuning)")
    ax.set_title("perturbation size relative to the token's norm")


def _learning_rate_panel(ax, hist: pd.DataFrame) -> None:
    ax.plot(hist["global_step"], hist["learning_rate"], color="#444444")
    ax.set_ylabel("learning rate")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.1e}" if v else "0"))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title("learning-rate schedule")


def _shade_stages(axes, hist: pd.DataFrame) -> None:
    """Every other stage shaded on every panel, each stage named at the foot of the loss panel."""
    if "stage" not in hist:
        return
    stages = hist.groupby("stage", sort=False)["global_step"].agg(["min", "max"])
    for i, (name, (lo, hi)) in enumerate(stages.iterrows()):
        for ax in axes.flat:
            if i % 2 == 1:
                ax.axvspan(lo - 0.5, hi + 0.5, color="#000000", alpha=0.05, lw=0)
        axes[0, 0].annotate(
            f"stage: {name}",
            xy=((lo + hi) / 2, 0.02),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="bottom",
            fontsize=9,
            color="#555555",
        )


def _run_title(cfg: Mapping[str, Any]) -> str:
    """``twitter_to_uci · SiFT · seed 1`` from a run's config (the parts it has)."""
    algo = ALGO_LABELS.get(cfg.get("algo"), cfg.get("algo"))
    return " · ".join(str(v) for v in (cfg.get("task"), algo, f"seed {cfg['seed']}" if "seed" in cfg else None) if v)


def metric_bars(record: Mapping[str, Any], *, paper: bool = True) -> Figure:
    """The run's evaluation metrics as bars, with chance level and the paper's figures."""
    cfg, metrics = record["config"], record["metrics"]
    task, algo = cfg["task"], cfg["algo"]
    names = [m for m in TASK_METRICS.get(task, ()) if m in metrics]
    names = sorted(names, key=lambda m: list(METRIC_TICK_LABELS).index(m) if m in METRIC_TICK_LABELS else 99)
    mcc = task == "cola"
    with _style():
        fig, axes = _figure(size=(1.9 * max(len(names), 2) + 2.2, 4.2))
        ax = axes[0, 0]
        values = [metrics[m] if metrics[m] is not None else math.nan for m in names]
        bars = ax.bar(
            range(len(names)),
            values,
            color=ALGO_COLORS.get(algo, "#1f77b4"),
            width=0.6,
            label=f"this run ({ALGO_LABELS.get(algo, algo)})",
        )
        for rect, v in zip(bars, values):
            if not math.isnan(v):
                ax.annotate(
                    f"{v:.3f}",
                    (rect.get_x() + rect.get_width() / 2, max(v, 0)),
                    ha="center",
                    va="bottom",
                    xytext=(0, 2),
                    textcoords="offset points",
                    fontsize=9,
                )
        ax.axhline(
            0.0 if mcc else 0.5,
            color="#444444",
            ls=":",
            lw=1,
            label="chance (MCC 0)" if mcc else "chance on balanced data (0.5)",
        )
        if paper and PAPER_METRIC.get(task) in names and algo in PAPER_RESULTS["bert"].get(task, {}):
            i = names.index(PAPER_METRIC[task])
            for model, marker in (("bert", "x"), ("deberta", "D")):
                ax.plot(
                    [i],
                    [PAPER_RESULTS[model][task][algo]],
                    marker=marker,
                    ls="none",
                    color="black",
                    ms=8,
                    label=f"paper, {'BERT-base' if model == 'bert' else 'DeBERTa-base'}",
                )
        ax.set_xticks(range(len(names)), [METRIC_TICK_LABELS.get(m, m) for m in names], fontsize=9)
        ax.set_xlabel("evaluation set")
        ax.set_ylabel("Matthews correlation (−1…1)" if mcc else "accuracy (fraction correct)")
        lo = min([0.0] + [v for v in values if not math.isnan(v)])
        ax.set_ylim(min(lo - 0.05, -0.05) if mcc else 0.0, 1.0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(
            f"{task} · {ALGO_LABELS.get(algo, algo)} · seed {cfg['seed']} · {record.get('meta', {}).get('device_name', '')}"
        )
    return fig


def wise_ft_frame(record: Mapping[str, Any]) -> pd.DataFrame | None:
    """A WiSE-FT run's alpha curve as a table (one row per alpha: the metrics of the last stage's
    evaluation sets), or None for a run without WiSE-FT."""
    wise = record.get("wise_ft")
    if not isinstance(wise, Mapping) or not wise.get("curve"):
        return None
    return pd.DataFrame(wise["curve"]).set_index("alpha").sort_index()


def wise_ft_curve(record: Mapping[str, Any]) -> Figure | None:
    """WiSE-FT's alpha curve: the validation metric alpha was chosen on and the protocol's test
    metric against alpha (alpha 0 the starting weights, 1 the fine-tuned model), the chosen alpha
    marked. None for a run without WiSE-FT. The test line is drawn to be looked at, never chosen on."""
    frame = wise_ft_frame(record)
    if frame is None:
        return None
    wise, cfg = record["wise_ft"], record["config"]
    select_on = wise["select_on"]
    test = PAPER_METRIC.get(cfg["task"]) or next((c for c in frame.columns if "test" in c), select_on)
    chosen = float(wise["alpha"])
    metric = "Matthews correlation" if select_on.endswith("_mcc") else "accuracy (fraction correct)"
    with _style():
        fig, axes = _figure(size=(7.2, 4.2))
        ax = axes[0, 0]
        for column, color, label in (
            (select_on, "#1f77b4", f"validation ({select_on}): chooses alpha"),
            (test, "#d62728", f"test ({test}): reported, never chosen on"),
        ):
            if column in frame:
                ax.plot(frame.index, frame[column], marker="o", color=color, label=label)
                if chosen in frame.index:
                    ax.plot([chosen], [frame.loc[chosen, column]], marker="*", ms=16, color=color, ls="none")
        ax.axvline(chosen, color="#444444", ls="--", lw=1, label=f"chosen alpha = {chosen:g}")
        ax.set_xlabel("alpha  (θ_α = (1 − α) θ₀ + α θ₁;  0: starting weights, 1: fine-tuned)")
        ax.set_ylabel(metric)
        ax.set_xlim(-0.03, 1.03)
        ax.legend(loc="best", fontsize=9)
        at1 = wise.get("finetuned", {}).get(test)
        at = record["metrics"].get(test)
        scope = {"encoder": "encoder interpolated, head fine-tuned", "model": "whole model interpolated"}.get(
            wise.get("scope"), str(wise.get("scope"))
        )
        result = (
            ""
            if at is None or at1 is None
            else f"\n{test}: {at:.3f} at the chosen alpha 1, the fine-tuned model"
            if chosen == 1.0
            else f"\n{test}: {at:.3f} at the chosen alpha {chosen:g}, {at1:.3f} at alpha 1"
        )
        ax.set_title(
            f"WiSE-FT · {ALGO_LABELS.get(cfg['algo'], cfg['algo'])} · seed {cfg['seed']} · {scope}{result}", fontsize=10
        )
    return fig


# ----------------------------------------------------------------------------- embedding statistics

_STAT_LABELS = {
    "norm": "per-token L2 norm ‖z_t‖",
    "mean": "per-token mean μ_t over the hidden dim",
    "std": "per-token std σ_t over the hidden dim",
}


def embedding_statistics(
    stats: pd.DataFrame,
    *,
    values: Sequence[str] = ("norm", "std", "mean"),
    include_special: bool = False,
    bins: int = 50,
) -> Figure:
    """Distributions of per-token statistics: one row per statistic, one column per point,
    one colour per domain (each domain normalized to its own density; seaborn's histplot).

    At most 10 inches wide, so a notebook shows it at full size with readable ticks."""
    import seaborn as sns

    df = stats if include_special else stats[~stats["special"]]
    points = _points(df)
    domains = list(dict.fromkeys(df["domain"]))
    palette = domain_palette(domains)
    counts = df[df["at"] == points[0]].groupby("domain", sort=False).size() if points else {}
    with _style():
        fig, axes = _figure(len(values), len(points), size=(min(10.0, 3.4 * len(points)), 2.5 * len(values) + 0.8))
        for c, point in enumerate(points):
            at = df[df["at"] == point]
            for r, value in enumerate(values):
                ax = axes[r, c]
                col = at[value].to_numpy(dtype=float)
                col = col[np.isfinite(col)]
                lo, hi = np.quantile(col, [0.001, 0.999]) if len(col) else (0.0, 1.0)
                lo, hi = _padded_range(np.array([lo, hi]))
                clipped = at.assign(**{value: at[value].clip(lo, hi)})
                sns.histplot(
                    clipped,
                    x=value,
                    hue="domain",
                    hue_order=domains,
                    palette=palette,
                    ax=ax,
                    bins=np.linspace(lo, hi, bins + 1),
                    stat="density",
                    common_norm=False,
                    element="step",
                    fill=False,
                    linewidth=1.4,
                    legend=False,
                )
                ax.set_xlim(lo, hi)
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:.3g}"))
                ax.set_xlabel(_STAT_LABELS.get(value, value), fontsize=9)
                ax.set_ylabel("density")
                # plain tick labels: a "1e7" offset text would sit on the panel above
                ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:.4g}"))
                if r == 0:
                    ax.set_title(POINT_LABELS.get(point, point).replace(" (", "\n("), fontsize=10)
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], color=palette[d], lw=1.6, label=f"{d or 'texts'} ({counts.get(d, 0):,} tokens)")
            for d in domains
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=max(len(domains), 1), title="domain")
        fig.suptitle(
            "Per-token embedding statistics by domain (real tokens, [CLS]/[SEP] excluded; x in each point's own units)"
            if not include_special
            else "Per-token embedding statistics by domain (real tokens; x in each point's own units)"
        )
    return fig


def norm_gap_tokens_plot(table: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Horizontal bars of `analysis.norm_gap_tokens`: each token's share of the mean-norm gap."""
    a, b = table.attrs.get("domain_a", "a"), table.attrs.get("domain_b", "b")
    gap = table.attrs.get("gap", math.nan)
    t = table.iloc[::-1]
    with _style():
        fig, axes = _figure(size=(8, 0.32 * len(t) + 1.8))
        ax = axes[0, 0]
        palette = domain_palette([a, b])
        colors = [palette[a if sa >= sb else b] for sa, sb in zip(t["share_a"], t["share_b"])]
        ax.barh(range(len(t)), t["contribution"], color=colors)
        norms = t["norm_a"].fillna(t["norm_b"])
        labels = [
            f"{tok!r}  ‖z‖={n:.3g}  ({ca}/{cb})"
            for tok, n, ca, cb in zip(t["token"], norms, t["count_a"], t["count_b"])
        ]
        ax.set_yticks(range(len(t)), labels, fontsize=9)
        ax.set_ylabel(f"token   ‖z‖: its norm   (count in {a} / {b})")
        ax.axvline(0, color="#444444", lw=0.8)
        ax.set_xlabel(
            f"contribution to mean ‖z_t‖ over {a} tokens − over {b} tokens (norm units)\n"
            f"> 0: the token raises {a}'s mean norm relative to {b}'s (pooled mean norm "
            f"{table.attrs.get('pooled_norm', math.nan):.3g})"
        )
        from matplotlib.patches import Patch

        # Below the axes: inside them a legend would cover bars.
        fig.legend(
            handles=[
                Patch(color=palette[a], label=f"more frequent in {a}"),
                Patch(color=palette[b], label=f"more frequent in {b}"),
            ],
            loc="outside lower center",
            ncols=2,
        )
        ax.set_title(title or f"tokens behind the mean-norm gap {a} − {b} = {gap:+.3g} (norm units)")
    return fig


def perturbation_sizes_plot(sizes: pd.DataFrame, *, include_special: bool = False) -> Figure:
    """SMART's vs SiFT's perturbation relative to each token's norm.

    One row per perturbation point. Left: ||Delta_t|| / ||z_t|| against ||z_t|| for every
    token, one colour per algorithm; right: the same ratio per domain (boxes). 10 inches
    wide, so a notebook shows it at full size.
    """
    df = sizes if include_special else sizes[~sizes["special"]]
    df = df[np.isfinite(df["relative"]) & (df["relative"] > 0)]
    points = _points(df) if not df.empty else ["embedding_output"]
    algos = [a for a in ALGO_COLORS if a in set(df["algo"])]
    domains = list(dict.fromkeys(df["domain"]))
    with _style():
        fig, axes = _figure(len(points), 2, size=(10, 3.3 * len(points) + 1.0), gridspec_kw={"width_ratios": [1.1, 1]})
        for r, point in enumerate(points):
            at = df[df["at"] == point]
            ax = axes[r, 0]
            if at.empty:
                _empty(ax, "no perturbations")
                _empty(axes[r, 1], "")
                continue
            for algo in algos:
                d = at[at["algo"] == algo]
                ax.scatter(d["norm"], d["relative"], s=6, alpha=0.35, color=ALGO_COLORS[algo], lw=0)
            _scale_x(ax, at["norm"], "token norm ‖z_t‖", "units of the point")
            _scale_y(ax, at["relative"], "‖Δ_t‖ / ‖z_t‖", "ratio")
            ax.set_title(POINT_LABELS.get(point, point), loc="left", fontsize=10)

            ax = axes[r, 1]
            _grouped_boxes(ax, at, algos, domains, "relative")
            _scale_y(ax, at["relative"], "‖Δ_t‖ / ‖z_t‖", "ratio")
            ax.set_xlabel("domain" if r == len(points) - 1 else "")
            ax.set_title("per domain (box: quartiles, whiskers: 1.5 IQR)", loc="left", fontsize=10)
        _algo_legend(fig, algos)
        fig.suptitle("Size of the adversarial perturbation relative to each token's norm")
    return fig


def _algo_legend(fig: Figure, algos: Sequence[str], title: str = "algorithm") -> None:
    """One legend for the whole figure, below the panels (never over data)."""
    from matplotlib.patches import Patch

    fig.legend(
        handles=[Patch(color=ALGO_COLORS[a], alpha=0.7, label=ALGO_LABELS.get(a, a)) for a in algos],
        loc="outside lower center",
        ncols=max(len(algos), 1),
        title=title,
    )


def _grouped_boxes(ax, frame: pd.DataFrame, algos: Sequence[str], domains: Sequence[str], column: str):
    """One box per (domain, algorithm), algorithms side by side within each domain
    (seaborn's boxplot with hue). Returns (algo, positions, per-domain values) for each
    algorithm, for overlays."""
    import seaborn as sns

    sub = frame[frame["algo"].isin(algos) & frame["domain"].isin(domains)]
    if not sub.empty:
        sns.boxplot(
            sub,
            x="domain",
            y=column,
            hue="algo",
            order=list(domains),
            hue_order=list(algos),
            palette={a: ALGO_COLORS[a] for a in algos},
            showfliers=False,
            width=0.8,
            gap=0.1,
            boxprops={"alpha": 0.6},
            medianprops={"color": "black"},
            legend=False,
            ax=ax,
        )
    ax.set_xticks(range(len(domains)), list(domains))
    ax.set_xlim(-0.5, len(domains) - 0.5)
    width = 0.8 / max(len(algos), 1)  # seaborn's dodge: hue levels share 0.8 of each slot
    drawn = []
    for i, algo in enumerate(algos):
        data = [frame.loc[(frame["algo"] == algo) & (frame["domain"] == d), column].to_numpy() for d in domains]
        drawn.append((algo, np.arange(len(domains)) + (i - (len(algos) - 1) / 2) * width, data))
    return drawn


def token_norm_shift_plot(
    shift: pd.DataFrame, *, value: str = "relative_shift", include_special: bool = False
) -> Figure:
    """How far fine-tuning moved each domain's tokens, per algorithm: one column per point."""
    df = shift if include_special else shift[~shift["special"]]
    points = _points(df) if not df.empty else ["embedding_output"]
    algos = [a for a in ALGO_COLORS if a in set(df.get("algo", []))]
    domains = list(dict.fromkeys(df["domain"])) if not df.empty else []
    ylabels = {
        "relative_shift": ("‖z_t(tuned) − z_t(base)‖ / ‖z_t(base)‖", "ratio"),
        "norm_change": ("‖z_t(tuned)‖ / ‖z_t(base)‖ − 1", "ratio"),
        "shift": ("‖z_t(tuned) − z_t(base)‖", "units of the point"),
    }
    with _style():
        fig, axes = _figure(1, len(points), size=(min(10.0, 3.4 * len(points)), 4.6))
        for c, point in enumerate(points):
            ax = axes[0, c]
            at = df[df["at"] == point]
            if at.empty:
                _empty(ax, "no runs")
                continue
            for algo, pos, data in _grouped_boxes(ax, at, algos, domains, value):
                means = [np.mean(x) if len(x) else np.nan for x in data]
                ax.plot(
                    pos, means, ls="none", marker="o", ms=4, color=ALGO_COLORS[algo], markeredgecolor="black", zorder=5
                )
            ax.set_xlabel("domain of the texts")
            name, unit = ylabels.get(value, (value, ""))
            if value == "norm_change":
                ax.axhline(0, color="#444444", lw=0.8)
                ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:.2g}"))
                ax.set_ylabel(f"{name} ({unit})", fontsize=9)
            else:
                _scale_y(ax, at[value], name, unit)
            ax.set_title(POINT_LABELS.get(point, point).replace(" (", "\n("), fontsize=10)
        _algo_legend(fig, algos, "algorithm (box: quartiles, whiskers: 1.5 IQR; dot: mean)")
        fig.suptitle("Token-norm shift: how fine-tuning moved each domain's token vectors")
    return fig


# ----------------------------------------------------------------------------- one sentence (00_tour)


def sentence_perturbation(frame: pd.DataFrame, *, mode: str = "relative") -> Figure:
    """Per-token perturbation size on one sentence, one colour per algorithm.

    `frame` is `analysis.perturbation_sizes` on a single text. `mode`: ``"raw"`` ||Delta_t||
    in the point's units, ``"normalized"`` ||Delta_t|| / sigma_t (SiFT's units) or
    ``"relative"`` ||Delta_t|| / ||z_t||. Below: the token's own norm and sigma_t. Sizes are
    dots (a log axis makes bar lengths meaningless); the thin line only guides the eye.
    """
    column = {"raw": "perturbation_norm", "normalized": "normalized", "relative": "relative"}
    if mode not in column:
        raise ValueError(f"mode must be one of {', '.join(map(repr, column))}; got {mode!r}")
    ylabels = {
        "raw": ("‖Δ_t‖₂", "raw units of the point"),
        "normalized": ("‖Δ_t‖₂ / σ_t", "normalized units"),
        "relative": ("‖Δ_t‖₂ / ‖z_t‖₂", "ratio"),
    }
    algos = [a for a in ALGO_COLORS if a in set(frame["algo"])]
    first = frame[frame["algo"] == algos[0]] if algos else frame
    tokens = list(first["token"])
    n = len(tokens)
    at = first["at"].iloc[0] if len(first) else ""
    with _style():
        fig, axes = _figure(
            2, 1, size=(max(7.5, 0.5 * n + 3.5), 6.4), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
        )
        ax, ax2 = axes[0, 0], axes[1, 0]
        shown = []
        for algo in algos:
            d = frame[frame["algo"] == algo]
            div = d["divergence"].iloc[0] if len(d) else math.nan
            real = d.loc[~d["special"], column[mode]] if "special" in d else d[column[mode]]
            ax.plot(
                range(len(d)),
                d[column[mode]],
                marker="o",
                ms=6,
                lw=0.8,
                color=ALGO_COLORS[algo],
                label=f"{ALGO_LABELS.get(algo, algo)}: median {real.median():.1e} (dotted)\n"
                f"divergence R = {div:.2e} nats",
            )
            # where the data are, on the axis itself: each algorithm's median over the real tokens
            ax.axhline(real.median(), color=ALGO_COLORS[algo], ls=":", lw=1)
            shown.append(d[column[mode]])
        _scale_y(ax, pd.concat(shown) if shown else [], *ylabels[mode])
        ax.set_title(f"perturbation per token at {at} (L2 norms over the hidden dimension)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax2.plot(
            range(n), first["norm"], marker="s", lw=0.8, color="#444444", label=f"‖z_t‖, token norm\n(units of {at})"
        )
        ax2.plot(range(n), first["std"], marker="^", lw=0.8, color="#999999", label="σ_t, token std\n(same units)")
        _scale_y(ax2, pd.concat([first["norm"], first["std"]]), "clean token")
        ax2.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax2.set_xticks(range(n), tokens, rotation=60, ha="right", fontsize=9)
        ax2.set_xlabel("token")
    return fig


def family_pushes(frame: pd.DataFrame) -> Figure:
    """Every input-perturbing method's push on one sentence: ‖Δ_t‖ / ‖z_t‖ per token (log axis),
    one colour per method, its perturbed point and the divergence it causes in the legend.

    `frame` is `siftkit.explore.pushes.method_pushes`. Relative sizes are comparable across
    points (each is a share of the token's own norm at the point the method pushes)."""
    algos = [a for a in ALGO_COLORS if a in set(frame["algo"])] + sorted(set(frame["algo"]) - set(ALGO_COLORS))
    first = frame[frame["algo"] == algos[0]] if algos else frame
    tokens = list(first["token"])
    with _style():
        fig, axes = _figure(1, 1, size=(max(7.5, 0.5 * len(tokens) + 4.5), 4.2))
        ax = axes[0, 0]
        for algo in algos:
            d = frame[frame["algo"] == algo]
            ax.plot(
                list(d["position"] - d["position"].min()),
                d["relative"],
                marker="o",
                ms=5,
                lw=0.8,
                color=ALGO_COLORS.get(algo, "#333333"),
                label=f"{ALGO_LABELS.get(algo, algo)} at {d['point'].iloc[0]}: "
                f"sym KL {d['divergence'].iloc[0]:.1e} nats",
            )
        _scale_y(ax, frame["relative"] if len(frame) else [], "‖Δ_t‖ / ‖z_t‖", "ratio")
        ax.set_title("each method's push per token, at its published defaults")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right", fontsize=9)
        ax.set_xlabel("token")
    return fig


def sentence_token_norms(stats: pd.DataFrame) -> Figure:
    """One sentence's per-token norm at each point of the embedding block (log scale)."""
    points = _points(stats)
    first = stats[stats["at"] == points[0]]
    tokens = list(first["token"])
    with _style():
        fig, axes = _figure(size=(max(7.0, 0.45 * len(tokens) + 2.5), 3.8))
        ax = axes[0, 0]
        for point, marker in zip(points, "osD^v"):
            d = stats[stats["at"] == point]
            ax.plot(range(len(d)), d["norm"], marker=marker, label=POINT_LABELS.get(point, point))
        _scale_y(ax, stats["norm"], "‖z_t‖", "units of each point")
        ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right", fontsize=9)
        ax.set_xlabel("token")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title("per-token norm at the three points of the embedding block")
    return fig


# ----------------------------------------------------------------------------- comparison (04)


def _shown_algos(frame: pd.DataFrame) -> list[str]:
    """The paper's three algorithms, then any other registered method that has runs here, in the
    kit's order (a method without runs gets no empty slot)."""
    present = set(frame["algo"]) if not frame.empty and "algo" in frame else set()
    return [a for a in ALGO_LABELS if a in ("plain", "smart", "sift") or a in present]


def compare_bars(table: pd.DataFrame, frame: pd.DataFrame | None = None) -> Figure:
    """The paper's two columns as bars: our mean ± std over seeds (one dot per seed when
    `frame` is given) beside the paper's BERT (×) and DeBERTa (◆) figures."""
    panels = (
        ("cola", "CoLA: MCC on out_of_domain_dev", "Matthews correlation (−1…1)"),
        ("twitter_to_uci", "Twitter → UCI: accuracy on the held-out 90% of UCI", "accuracy (fraction correct)"),
    )
    algos = _shown_algos(table)
    with _style():
        fig, axes = _figure(1, 2, size=(12, 4.6))
        for c, (task, title, ylabel) in enumerate(panels):
            ax = axes[0, c]
            metric = PAPER_METRIC[task]
            t = table[(table["task"] == task) & (table["metric"] == metric)] if not table.empty else table
            groups = list(dict.fromkeys(zip(t["model"], t["variant"]))) if not t.empty else []
            width = min(0.5, 0.75 / max(len(groups), 1))
            cmap = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
            for g, (model, variant) in enumerate(groups):
                rows = t[(t["model"] == model) & (t["variant"] == variant)]
                label = model + (f" [{variant}]" if variant else "")
                pos, means, stds = [], [], []
                for a, algo in enumerate(algos):
                    r = rows[rows["algo"] == algo]
                    if r.empty:
                        continue
                    pos.append(a + (g - (len(groups) - 1) / 2) * width)
                    means.append(float(r["mean"].iloc[0]))
                    stds.append(float(r["std"].iloc[0]) if not math.isnan(r["std"].iloc[0]) else 0.0)
                    if frame is not None and not frame.empty:
                        sel = frame[
                            (frame["task"] == task)
                            & (frame["model"] == model)
                            & (frame["variant"] == variant)
                            & (frame["algo"] == algo)
                        ]
                        if metric in sel:
                            ax.plot(
                                [pos[-1]] * len(sel),
                                sel[metric],
                                ls="none",
                                marker=".",
                                color="black",
                                alpha=0.6,
                                ms=5,
                                zorder=3,
                            )
                ax.bar(
                    pos,
                    means,
                    yerr=stds,
                    width=width * 0.9,
                    color=cmap(g),
                    alpha=0.8,
                    capsize=3,
                    label=f"ours: {label} (mean ± std)",
                )
            for model, marker in (("bert", "x"), ("deberta", "D")):
                # the paper reports plain, SMART and SiFT only: a marker where it has a number
                published = [
                    (i, PAPER_RESULTS[model][task][a]) for i, a in enumerate(algos) if a in PAPER_RESULTS[model][task]
                ]
                ax.plot(
                    [i for i, _ in published],
                    [v for _, v in published],
                    ls="none",
                    marker=marker,
                    color="black",
                    ms=8,
                    label=f"paper, {'BERT-base (Table 1)' if model == 'bert' else 'DeBERTa-base (Table 2)'}",
                )
            ax.axhline(
                0.0 if task == "cola" else 0.5,
                color="#444444",
                ls=":",
                lw=1,
                label="chance" if task == "cola" else "chance (balanced, 0.5)",
            )
            ax.set_xticks(range(len(algos)), [ALGO_LABELS[a] for a in algos])
            ax.set_xlabel("algorithm")
            ax.set_ylabel(ylabel)
            ax.set_ylim(-0.1 if task == "cola" else 0.0, 1.0)
            ax.set_title(title)
            if not groups:
                ax.annotate(
                    "no runs of this protocol yet", (0.5, 0.3), xycoords="axes fraction", ha="center", color="#666666"
                )
            if len(groups) <= 3:
                ax.legend(loc="upper left", fontsize=8)
            else:  # many variants: the legend goes under the panel, off the bars
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7, ncol=2, frameon=False)
                fig.set_size_inches(12, 4.6 + 0.16 * (len(groups) + 3) / 2)
        fig.suptitle("Ours vs the paper (dots: individual seeds)")
    return fig


def cost_bars(frame: pd.DataFrame) -> Figure:
    """Wall time per run, per protocol and algorithm (bars: mean; dots: runs), in minutes."""
    tasks = [t for t in ("cola", "twitter_to_uci") if not frame.empty and t in set(frame["task"])]
    algos = _shown_algos(frame)
    with _style():
        fig, axes = _figure(1, max(len(tasks), 1), size=(5.5 * max(len(tasks), 1), 4.0))
        if not tasks:
            _empty(axes[0, 0], "no runs")
            return fig
        for c, task in enumerate(tasks):
            ax = axes[0, c]
            sub = frame[frame["task"] == task]
            for a, algo in enumerate(algos):
                minutes = sub.loc[sub["algo"] == algo, "wall_time_s"].dropna().astype(float) / 60.0
                if minutes.empty:
                    continue
                ax.bar(a, minutes.mean(), width=0.6, color=ALGO_COLORS[algo], alpha=0.8)
                ax.plot([a] * len(minutes), minutes, ls="none", marker=".", color="black", alpha=0.6)
                ax.annotate(
                    f"{minutes.mean():.1f} min (n={len(minutes)})",
                    (a, minutes.mean()),
                    ha="center",
                    va="bottom",
                    xytext=(0, 3),
                    textcoords="offset points",
                    fontsize=9,
                )
            ax.set_xticks(range(len(algos)), [ALGO_LABELS[a] for a in algos])
            ax.set_xlabel("algorithm")
            ax.set_ylabel("wall time per run (minutes)")
            devices = ", ".join(sorted({str(d) for d in sub["device"].dropna()})) if "device" in sub else ""
            ax.set_title(f"{task} ({devices})" if devices else task)
        fig.suptitle("Cost of a whole run (training, evaluation, checkpoints); dots: individual runs")
    return fig


# ----------------------------------------------------------------------------- a shift spec's targets (05)


def per_target_bars(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Accuracy, MCC and macro-F1 per evaluation target, one bar per algorithm (05_your_shift).

    `table` is `analysis.shift_target_table` (with `validation`, each stage's validation set
    comes first, labelled so). On the accuracy panel a black dash marks each set's
    majority-label share (the ``majority`` column), the floor a classifier has to clear. Up to
    four targets the three panels sit side by side, else one above the other.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    algos = [a for a in ALGO_LABELS if a in set(table["algo"])]
    targets = list(dict.fromkeys(table["target"]))
    roles = dict(zip(table["target"], table["role"]))
    ticks = [f"{t}\n(validation)" if roles[t] == "validation" else t for t in targets]
    metrics = {"accuracy": "accuracy", "mcc": "MCC", "macro_f1": "macro-F1"}
    wide = len(targets) <= 4
    width = 0.8 / max(len(algos), 1)
    with _style():
        fig, axes = (
            _figure(1, 3, size=(10, 4.2))
            if wide
            else _figure(3, 1, size=(min(10.0, max(7.0, 1.1 * len(targets) + 2)), 10))
        )
        for ax, (metric, label) in zip(axes.flat, metrics.items()):
            for k, algo in enumerate(algos):
                rows = table[table["algo"] == algo].set_index("target")
                values = [float(rows.loc[t, metric]) if t in rows.index else math.nan for t in targets]
                pos = [i + (k - (len(algos) - 1) / 2) * width for i in range(len(targets))]
                bars = ax.bar(pos, values, width=width * 0.95, color=ALGO_COLORS[algo])
                ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2, rotation=90)
            low = min(0.0, float(table[metric].min()))
            ax.set_ylim(low - 0.05 if low < 0 else 0, 1.18)  # room above a bar of 1.0 for its label
            ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator([v / 5 for v in range(-5, 6)]))
            ax.axhline(0, color="#444444", lw=0.8)
            ax.set_xticks(range(len(targets)), ticks)
            ax.set_title(label)
            ax.grid(axis="y", alpha=0.3)
            if metric == "accuracy" and "majority" in table:
                for i, target in enumerate(targets):
                    share = table.loc[table["target"] == target, "majority"].iloc[0]
                    ax.hlines(share, i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1.2)
        handles = [Patch(color=ALGO_COLORS[a], label=ALGO_LABELS[a]) for a in algos]
        if "majority" in table:
            handles.append(Line2D([], [], color="black", ls="--", label="majority-label share"))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
        if title:
            fig.suptitle(title)
    return fig
