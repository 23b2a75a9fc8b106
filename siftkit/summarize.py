"""`python -m siftkit summarize results/`: SUMMARY.md and figures from results.json files.

Runs are grouped by (task, device, model, variant), where the variant is the algorithm
plus the sweep's tag (``smart-no_bregman``, ``sift-word_embeddings``, ...). For each group:
mean ± sample std over seeds, the paper's figure beside it, and for SiFT vs SMART the
paired difference over seeds (same seed = same data split and head initialisation) with a
95% t confidence interval. The "regularizer activity" table reads the run histories:
``adv_weight * R`` and ``bregman_weight * Bregman`` relative to the task loss, and the mean
per-token perturbation relative to the token's norm, so a reader can see whether the
regularizer did anything at all. Nothing here is typed by hand: every number is read from
the files.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from siftkit.paper import PAPER_METRIC, PAPER_RESULTS, TASK_METRICS
from siftkit.results import RESULTS_FILE, atomic_write_text, load_results

# (BERT-base, DeBERTa-base) per task and algorithm, from the one table in siftkit.paper.
PAPER = {task: {algo: (PAPER_RESULTS["bert"][task][algo], PAPER_RESULTS["deberta"][task][algo])
                for algo in PAPER_RESULTS["bert"][task]} for task in PAPER_RESULTS["bert"]}
MAIN_METRIC = PAPER_METRIC
# Two-sided 95% Student t critical values by degrees of freedom (exact to 3 decimals).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_critical(df: int) -> float:
    if df < 1:
        return float("nan")
    keys = sorted(_T975)
    usable = [k for k in keys if k <= df]
    return _T975[usable[-1]] if df <= keys[-1] else 1.960  # conservative between table rows


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob(RESULTS_FILE)))
        else:
            raise ValueError(f"no results file or folder at {p}")
    return found


def run_key(record: dict[str, Any]) -> dict[str, str]:
    cfg, meta = record["config"], record["meta"]
    tag = (cfg.get("extra") or {}).get("tag")
    device = meta.get("device_name") or meta.get("device", "cpu")
    if meta.get("mixed_precision", "no") not in ("no", None):
        device += f" {meta['mixed_precision']}"
    return {"task": cfg["task"], "device": device,
            "model": cfg.get("model_name") or "all-MiniLM-L6-v2",
            "variant": cfg["algo"] + (f"-{tag}" if tag else ""), "algo": cfg["algo"]}


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict[str, float]:
    """mean of (a - b) over the seeds both have, with a 95% t interval."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "low": float("nan"), "high": float("nan")}
    m, sd = mean_std(diffs)
    half = t_critical(n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": m, "low": m - half, "high": m + half}


def activity(record: dict[str, Any]) -> dict[str, float]:
    """Mean over logged steps of weighted R / task loss, weighted Bregman / task loss,
    and relative perturbation size (||Delta_t|| / ||z_t||)."""
    cfg, rows = record["config"], record["history"]
    w, mu = cfg.get("adv_weight") or 0.0, cfg.get("bregman_weight") or 0.0
    r_rel, b_rel, pert = [], [], []
    for row in rows:
        task = row.get("task_loss")
        if not task or task <= 0:
            continue
        if row.get("adv_loss") is not None:
            r_rel.append(w * row["adv_loss"] / task)
        if row.get("bregman_loss") is not None:
            b_rel.append(mu * row["bregman_loss"] / task)
        if row.get("relative_perturbation") is not None:
            pert.append(row["relative_perturbation"])
    avg = lambda xs: statistics.fmean(xs) if xs else float("nan")  # noqa: E731
    return {"weighted_R_over_task": avg(r_rel), "weighted_bregman_over_task": avg(b_rel),
            "relative_perturbation": avg(pert)}


def _fmt(m: float, s: float | None = None, digits: int = 3) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    text = f"{m:.{digits}f}"
    if s is not None and not math.isnan(s):
        text += f" ± {s:.{digits}f}"
    return text


def _sci(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.2e}"


def summarize(paths: Iterable[str | Path]) -> tuple[str, dict]:
    files = find_results(paths)
    if not files:
        raise ValueError("no results.json files found")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for f in files:
        rec = load_results(f)
        key = run_key(rec)
        groups[(key["task"], key["device"], key["model"], key["variant"])].append(rec)

    lines = ["# siftkit results summary", "",
             f"Generated by `python -m siftkit summarize` from {len(files)} results.json files. "
             "Mean ± sample standard deviation over seeds; n = number of seeds. "
             "Paper columns: the paper's Table 1 (BERT-base) and Table 2 (DeBERTa-base), single seed-42 runs "
             "of different, larger models — shown for orientation, not as a like-for-like target.", ""]
    data: dict[str, Any] = {"groups": {}}
    by_setting: dict[tuple, dict[str, list[dict]]] = defaultdict(dict)
    for (task, device, model, variant), recs in groups.items():
        by_setting[(task, device, model)][variant] = recs

    for (task, device, model), variants in sorted(by_setting.items()):
        metrics = TASK_METRICS[task]
        title = "P1 · CoLA" if task == "cola" else "P2 · Twitter → UCI"
        lines += [f"## {title} — {model} on {device}", ""]
        head = ["variant", "n"] + list(metrics) + ["paper BERT", "paper DeBERTa", "wall time (s)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for variant in sorted(variants, key=_variant_order):
            recs = variants[variant]
            algo = recs[0]["config"]["algo"]
            cells = [f"`{variant}`", str(len(recs))]
            stats = {}
            for m in metrics:
                vals = [r["metrics"][m] for r in recs if r["metrics"].get(m) is not None]
                stats[m] = mean_std(vals)
                cells.append(_fmt(*stats[m]))
            paper = PAPER[task].get(algo) if variant == algo else None
            cells += [_fmt(paper[0], digits=2) if paper else "", _fmt(paper[1], digits=2) if paper else ""]
            cells.append(_fmt(*mean_std([r["meta"]["wall_time_s"] for r in recs]), digits=0))
            lines.append("| " + " | ".join(cells) + " |")
            data["groups"][f"{task}|{device}|{model}|{variant}"] = {
                "n": len(recs), "seeds": sorted(r["config"]["seed"] for r in recs),
                **{m: {"mean": s[0], "std": s[1]} for m, s in stats.items()}}
        lines.append("")

        main = MAIN_METRIC[task]
        per_seed = {v: {r["config"]["seed"]: r["metrics"][main] for r in recs} for v, recs in variants.items()}
        pairs = [("sift", "smart"), ("sift", "plain"), ("smart", "plain")]
        # RNG-matched comparisons: `smart-rng_control` draws the same random numbers as SiFT
        # and Bregman-free SMART but weights R by 0, so these differences are R's own effect.
        pairs += [("smart-no_bregman", "smart-rng_control"), ("sift", "smart-rng_control"),
                  ("smart-rng_control", "plain"), ("smart", "smart-no_bregman")]
        pairs += [(v, "smart") for v in sorted(per_seed) if v.startswith("smart-") and v != "smart-no_bregman"
                  and v != "smart-rng_control"]
        pairs += [(v, "sift") for v in sorted(per_seed) if v.startswith("sift-")]
        rows = []
        for a, b in pairs:
            if a in per_seed and b in per_seed:
                d = paired_difference(per_seed[a], per_seed[b])
                if d["n"]:
                    rows.append(f"| `{a}` − `{b}` | {d['n']} | {_fmt(d['mean'])} | "
                                f"[{_fmt(d['low'])}, {_fmt(d['high'])}] | {_verdict(d)} |")
                    data["groups"].setdefault("paired", {})[f"{task}|{device}|{a}-{b}"] = d
        if rows:
            lines += [f"Paired differences in `{main}` (same seeds), with 95% t confidence intervals:", "",
                      "| difference | n | mean | 95% CI | reading |", "|---|---|---|---|---|", *rows, ""]
        if "plain" in variants:
            spread = mean_std([r["metrics"][main] for r in variants["plain"]])[1]
            lines += [f"Seed-to-seed spread of `plain` in `{main}`: std {_fmt(spread)}.", ""]

        act_rows = []
        for variant in sorted(variants, key=_variant_order):
            recs = variants[variant]
            if recs[0]["config"]["algo"] == "plain":
                continue
            acts = [activity(r) for r in recs]
            avg = {k: statistics.fmean([a[k] for a in acts if not math.isnan(a[k])] or [float("nan")]) for k in acts[0]}
            skipped = sum(r["meta"].get("skipped_adversarial_steps", 0) for r in recs)
            act_rows.append(f"| `{variant}` | {_sci(avg['weighted_R_over_task'])} | "
                            f"{_sci(avg['weighted_bregman_over_task'])} | {_sci(avg['relative_perturbation'])} | {skipped} |")
        if act_rows:
            lines += ["Regularizer activity (means over all logged steps and seeds):", "",
                      "| variant | λ·R / task loss | μ·Bregman / task loss | ‖Δ_t‖ / ‖z_t‖ | skipped steps |",
                      "|---|---|---|---|---|", *act_rows, ""]
    return "\n".join(lines).rstrip() + "\n", data


def brief(paths: Iterable[str | Path]) -> str:
    """The README's compact tables: the main metric of plain / SMART / SiFT per setting."""
    groups: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for f in find_results(paths):
        rec = load_results(f)
        key = run_key(rec)
        if key["variant"] in ("plain", "smart", "sift"):
            groups[(key["task"], key["device"])][key["variant"]].append(rec["metrics"][MAIN_METRIC[key["task"]]])
    lines = ["| protocol (metric) | device | plain | SMART | SiFT | paper BERT (plain / SMART / SiFT) |",
             "|---|---|---|---|---|---|"]
    for (task, device), by_algo in sorted(groups.items()):
        cells = []
        for algo in ("plain", "smart", "sift"):
            vals = by_algo.get(algo, [])
            cells.append(f"{_fmt(*mean_std(vals))} (n={len(vals)})" if vals else "–")
        paper = " / ".join(f"{PAPER[task][a][0]:.2f}" for a in ("plain", "smart", "sift"))
        name = "P1 CoLA (out-of-domain dev MCC)" if task == "cola" else "P2 Twitter → UCI (accuracy on 90% UCI)"
        lines.append(f"| {name} | {device} | " + " | ".join(cells) + f" | {paper} |")
    return "\n".join(lines) + "\n"


def _variant_order(v: str) -> tuple:
    algo = v.split("-", 1)[0]
    return ({"plain": 0, "smart": 1, "sift": 2}.get(algo, 3), v)


def _verdict(d: dict[str, float]) -> str:
    if d["n"] < 2 or math.isnan(d["low"]):
        return "too few seeds for an interval"
    if d["low"] > 0:
        return "positive (CI excludes 0)"
    if d["high"] < 0:
        return "negative (CI excludes 0)"
    return "no detectable difference (CI includes 0)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="siftkit summarize", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="results folders or results.json files")
    p.add_argument("--out", default=None, help="Markdown file to write (default: <first path>/SUMMARY.md)")
    p.add_argument("--figures", default=None, help="folder for PNG figures (default: <first path>/figures)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--brief", action="store_true", help="print the README's compact table and exit")
    args = p.parse_args(argv)
    if args.brief:
        print(brief(args.paths), end="")
        return 0
    text, _ = summarize(args.paths)
    first = Path(args.paths[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / "SUMMARY.md"
    atomic_write_text(out, text)
    print(f"wrote {out}")
    if not args.no_figures:
        from siftkit.summary_figures import write_figures

        fig_dir = Path(args.figures) if args.figures else out.parent / "figures"
        for path in write_figures(args.paths, fig_dir):
            print(f"wrote {path}")
    return 0
