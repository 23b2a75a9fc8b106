"""Synthetic records of `sweep --grid` runs (one grid point's results.json, its folder, an arm's
whole grid), with the fields a newer RunConfig adds, read with defaults.

    from helpers_grid import grid_record, write, write_arm
"""

from __future__ import annotations

import json
from pathlib import Path

from siftkit.study.select import DEFAULT_SELECT_ON, grid_label

COMMIT = "b" * 40


def grid_record(
    algo: str,
    seed: int,
    arm_tag: str,
    grid: dict,
    index: int,
    *,
    val: float | None,
    test: float,
    task: str = "twitter_to_uci",
    chosen: bool = False,
    controls: dict | None = None,
    select_on: str | None = None,
) -> dict:
    """A results.json record of one grid point's run (``val`` None: the metric is missing)."""
    sel = select_on or DEFAULT_SELECT_ON[task]
    if task == "cola":
        metrics = {"out_of_domain_dev_mcc": test, "in_domain_dev_mcc": val}
    else:
        metrics = {
            "uci_test_accuracy": test,
            "uci_zero_shot_accuracy": 0.5,
            "twitter_val_accuracy": 0.9,
            "uci_val_accuracy": val,
            "uci_val_mcc": None if val is None else val - 0.3,
        }
    metrics = {k: v for k, v in metrics.items() if v is not None}
    extra = {
        "tag": f"{arm_tag}__{grid_label(grid)}",
        "arm": f"{algo}-{arm_tag}",
        "grid": grid,
        "grid_index": index,
        "select_on": sel,
        **({"chosen": True} if chosen else {}),
    }
    cfg = {
        "task": task,
        "algo": algo,
        "seed": seed,
        "model_name": None,
        "adv_weight": 1.0,
        "uci_val_size": 300,
        **grid,
        **(controls or {}),
        "extra": extra,
    }
    rows = [
        {
            "stage": "twitter",
            "global_step": i + 1,
            "task_loss": 0.5,
            "adv_loss": 0.01,
            "loss": 0.51,
            "relative_perturbation": 0.01,
        }
        for i in range(3)
    ]
    return {
        "config": cfg,
        "metrics": metrics,
        "history": rows,
        "meta": {"git_commit": COMMIT, "device_name": "cpu", "mixed_precision": "no", "wall_time_s": 1.0},
    }


def write(root: Path, rec: dict) -> Path:
    cfg = rec["config"]
    name = (
        cfg["algo"]
        + "-"
        + (cfg["extra"]["arm"].partition("-")[2] + "__chosen" if cfg["extra"].get("chosen") else cfg["extra"]["tag"])
    )
    d = root / cfg["task"] / name / f"seed{cfg['seed']}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(json.dumps(rec))
    return d


def write_arm(
    root: Path, algo: str, arm_tag: str, points: list[tuple[dict, dict[int, tuple[float | None, float]]]], **kw
) -> None:
    """points: [(grid, {seed: (val, test)})] in grid order."""
    for index, (grid, per_seed) in enumerate(points):
        for seed, (val, test) in per_seed.items():
            write(root, grid_record(algo, seed, arm_tag, grid, index, val=val, test=test, **kw))
