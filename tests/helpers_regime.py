"""Synthetic records of the regime study, written the way siftkit.run.training writes them (the
fields the summary reads): one record, its folder, and the whole study with its spec beside it.

    from helpers_regime import record, write, regime_study
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

COMMIT = "a" * 40


# the regime study's spec, which names the comparisons it exists for (results/regime_study.yaml)
REGIME_SPEC = Path(__file__).resolve().parents[1] / "results" / "regime_study.yaml"


SIZES = {"smart": 2.0, "sift": 0.7}  # measured relative size per unit of E, per algorithm (synthetic)


CURVE_EPS = (1e-05, 0.0001, 0.001, 0.01, 0.1, 0.3)


def accuracy(algo: str, size: float, seed: int) -> float:
    """A made-up accuracy: a bump near size 0.05 (SiFT's higher), plus a seed offset and a
    per-(variant, seed) wobble so that paired intervals have width."""
    bump = (0.05 if algo == "sift" else 0.03) * math.exp(-((math.log10(max(size, 1e-9)) + 1.3) ** 2))
    wobble = 0.004 * math.sin(seed * 7.1 + size * 13 + (algo == "sift"))
    return 0.62 + bump + 0.01 * seed + wobble


def record(
    algo: str,
    seed: int,
    *,
    tag: str | None = None,
    size: float = 0.0,
    acc: float | None = None,
    device: str = "NVIDIA H200",
    commit: str = COMMIT,
    task: str = "twitter_to_uci",
    new_metrics=True,
    adv_weight: float = 1.0,
    bregman: float = 0.0,
) -> dict:
    """A results.json record as siftkit.run.training writes it (the fields the summary reads)."""
    acc = accuracy(algo, size, seed) if acc is None else acc
    rows = []
    for i, stage in enumerate(["twitter"] * 6 + ["uci"] * 4):
        r = 0.0 if algo == "plain" else 0.02 * size
        task_loss = 0.6 - 0.02 * i
        rows.append(
            {
                "stage": stage,
                "step": i + 1,
                "global_step": i + 1,
                "task_loss": task_loss,
                "adv_loss": r,
                "bregman_loss": 0.0,
                "loss": task_loss + adv_weight * r,
                "perturbation_norm": 9 * size,
                "relative_perturbation": size * (1 + 0.01 * (i - 5)),
            }
        )
    metrics = {"uci_test_accuracy": acc, "uci_zero_shot_accuracy": 0.45, "twitter_val_accuracy": 0.87}
    if task == "cola":
        metrics = {"out_of_domain_dev_mcc": acc - 0.5, "in_domain_dev_mcc": acc - 0.4}
    if new_metrics:
        metrics["mean_relative_perturbation"] = float(np.mean([r["relative_perturbation"] for r in rows]))
        metrics["mean_perturbation_norm"] = 9 * size
        for ev in (
            ("twitter_val", "uci_zero_shot", "uci_test") if task != "cola" else ("in_domain_dev", "out_of_domain_dev")
        ):
            metrics[f"{ev}_smoothness_0.01"] = 1e-5 / (1 + 10 * size) * (1 + 0.01 * seed)
            metrics[f"{ev}_smoothness_0.3"] = 1e-2 / (1 + 10 * size) * (1 + 0.01 * seed)
        if task != "cola":
            for k, src in enumerate(("amazon", "imdb", "yelp")):
                metrics[f"uci_test_accuracy_{src}"] = acc + 0.01 * (k - 1)
                metrics[f"uci_zero_shot_accuracy_{src}"] = 0.45
    cfg = {
        "task": task,
        "algo": algo,
        "seed": seed,
        "model_name": None,
        "adv_rule": "projected",
        "adv_weight": adv_weight,
        "bregman_weight": bregman,
        "adv_steps": 1,
        "extra": {"tag": tag} if tag else {},
    }
    return {
        "config": cfg,
        "metrics": metrics,
        "history": rows,
        "stages": [],
        "meta": {
            "git_commit": commit,
            "device_name": device,
            "device": "cuda" if device != "cpu" else "cpu",
            "mixed_precision": "no",
            "wall_time_s": 60.0,
            "skipped_adversarial_steps": 0,
        },
    }


def write(root: Path, rec: dict) -> Path:
    cfg = rec["config"]
    tag = cfg["extra"].get("tag")
    d = root / cfg["task"] / (cfg["algo"] + (f"-{tag}" if tag else "")) / f"seed{cfg['seed']}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(json.dumps(rec))
    return d / "results.json"


def regime_study(root: Path, seeds=range(1, 6), **kw) -> Path:
    """The issue's regime study, synthetic: plain, defaults, the mtdnn regime and its controls,
    the size curve with its controls, deberta, seed_code and the RNG control."""
    for seed in seeds:
        write(root, record("plain", seed, **kw))
        write(root, record("smart", seed, size=2e-5, bregman=1.0, **kw))
        write(root, record("sift", seed, size=7e-3, **kw))
        for algo, tag, size in (
            ("smart", "mtdnn", 0.61),
            ("smart", "mtdnn_no_bregman", 0.61),
            ("smart", "mtdnn_random", 0.6),
            ("sift", "mtdnn", 0.34),
            ("sift", "mtdnn_random", 0.33),
            ("sift", "deberta", 9.6e-3),
            ("sift", "seed_code", 0.34),
        ):
            write(root, record(algo, seed, tag=tag, size=size, **kw))
        write(root, record("smart", seed, tag="rng_control", size=2e-5, adv_weight=0.0, **kw))
        for algo in ("smart", "sift"):
            for eps in CURVE_EPS:
                write(root, record(algo, seed, tag=f"curve_eps{eps:g}", size=SIZES[algo] * eps, **kw))
            write(root, record(algo, seed, tag=f"curve_eps{CURVE_EPS[-1]:g}_random", size=SIZES[algo] * 0.3, **kw))
            write(
                root,
                record(
                    algo, seed, tag=f"curve_eps{CURVE_EPS[-1]:g}_w10", size=SIZES[algo] * 0.3, adv_weight=10.0, **kw
                ),
            )
    shutil.copy(REGIME_SPEC, root / REGIME_SPEC.name)  # beside its runs, as in results/
    return root
