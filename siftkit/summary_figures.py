"""Figures of a study, drawn from results.json files (used by `siftkit summarize`).

- ``<task>_<device>_scores.png``: the main metric per variant as a bar (mean over seeds)
  with every seed as a point, the paper's BERT / DeBERTa figures as markers;
- ``<task>_<device>_learning_curves.png``: logged task loss against the optimizer step,
  mean over seeds (centred moving average of 5 logs), one line per main algorithm, with
  the stage boundary of P2 marked.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from siftkit.results import load_results
from siftkit.summarize import MAIN_METRIC, PAPER, _variant_order, find_results, run_key

_LABEL = {"uci_test_accuracy": "accuracy on the held-out 90% of UCI",
          "out_of_domain_dev_mcc": "MCC on CoLA out_of_domain_dev"}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _smooth(values: list[float], width: int) -> list[float]:
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - width // 2), min(len(values), i + width // 2 + 1)
        window = values[lo:hi]
        out.append(sum(window) / len(window))
    return out


def write_figures(paths: Iterable[str | Path], out_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for f in find_results(paths):
        rec = load_results(f)
        k = run_key(rec)
        groups[(k["task"], k["device"])][k["variant"]].append(rec)

    written = []
    for (task, device), variants in sorted(groups.items()):
        metric = MAIN_METRIC[task]
        names = sorted(variants, key=_variant_order)
        fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(names) + 2), 4.2))
        for i, name in enumerate(names):
            vals = [r["metrics"][metric] for r in variants[name]]
            ax.bar(i, sum(vals) / len(vals), color="#c8d6e5", edgecolor="#34495e", width=0.7)
            ax.scatter([i] * len(vals), vals, color="#34495e", s=14, zorder=3,
                       label="one seed" if i == 0 else None)
            algo = variants[name][0]["config"]["algo"]
            if name == algo and algo in PAPER[task]:
                bert, deberta = PAPER[task][algo]
                ax.scatter([i + 0.25], [bert], marker="_", s=300, color="#e67e22",
                           label="paper, BERT-base" if name == "plain" else None, zorder=4)
                ax.scatter([i + 0.25], [deberta], marker="_", s=300, color="#8e44ad",
                           label="paper, DeBERTa-base" if name == "plain" else None, zorder=4)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel(_LABEL.get(metric, metric))
        ax.set_title(f"{'P2 Twitter→UCI' if task == 'twitter_to_uci' else 'P1 CoLA'} — {device} "
                     f"(bars: mean over seeds)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{task}_{_slug(device)}_scores.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name in [n for n in names if n in ("plain", "smart", "sift")]:
            runs = variants[name]
            length = min(len(r["history"]) for r in runs)
            steps = [row["global_step"] for row in runs[0]["history"][:length]]
            mean = [sum(r["history"][i]["task_loss"] for r in runs) / len(runs) for i in range(length)]
            stages = [row["stage"] for row in runs[0]["history"][:length]]
            smoothed = []  # smooth within each stage, never across the boundary
            for stage in dict.fromkeys(stages):
                smoothed += _smooth([m for m, st in zip(mean, stages) if st == stage], 5)
            ax.plot(steps, smoothed, label=f"{name} (mean of {len(runs)} seeds)")
        first = variants[names[0]][0]["history"]
        for prev, row in zip(first, first[1:]):
            if row["stage"] != prev["stage"]:  # P2: Twitter -> UCI, the label meaning changes
                ax.axvline(prev["global_step"], color="grey", ls="--", lw=1)
                ax.text(prev["global_step"], ax.get_ylim()[1], f" {row['stage']} stage →", va="top",
                        fontsize=8, color="grey")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("task cross-entropy (nats), moving average of 5 logs")
        ax.set_title(f"Learning curves — {task} on {device}")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{task}_{_slug(device)}_learning_curves.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
