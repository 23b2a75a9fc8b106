"""A random-noise control at a *matched measured size*: the noise std that makes ``adv_steps=0``
push each token as far as the ascent does.

Why it is needed: with ``adv_steps=0`` the perturbation is the initial noise ``N(0, sigma^2)``
projected onto the ball. At ``sigma = epsilon`` (the size curve's setting) only part of the noise
reaches the ball's surface, while the ascent step (``eta = 100 epsilon``) pushes nearly every
coordinate onto it: in the regime study the random control measured 0.43 beside the ascent's
0.59 at the same epsilon, so "ascent against noise" also compared two sizes. Raising sigma fills
the ball; `matched_noise_std` finds, by bisection in log sigma on a batch of real texts at
initialisation, the sigma whose measured mean per-token ``||Delta_t|| / ||z_t||`` is the target
(the same measure as a run's ``mean_relative_perturbation``). The measured size of a whole run
also moves a little as the model trains, for the ascent and the noise alike; check it in the
run's records. ``python benchmarks/rule_sizes.py --target-size 0.59`` prints the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from siftkit.core.regularizers import REGULARIZERS
from siftkit.core.split import EmbeddingSplit
from siftkit.run.config import RunConfig


def measured_size(split: EmbeddingSplit, batch: Mapping[str, Any], cfg: RunConfig, *, seed: int = 0) -> float:
    """The regularizer's mean per-token relative perturbation on one batch (the model as it is)."""
    reg = REGULARIZERS[cfg.algo].from_config(cfg)
    with torch.no_grad():
        logits, z = split.forward_capture(batch, cfg.perturb_at)
    torch.manual_seed(seed)
    reg(split, batch, logits, z)
    return float(reg.last_stats["relative_perturbation"])


def matched_noise_std(
    split: EmbeddingSplit,
    batch: Mapping[str, Any],
    cfg: RunConfig,
    target: float,
    *,
    rel_tol: float = 0.005,
    max_iter: int = 60,
) -> tuple[float, float]:
    """(adv_noise_std, its measured size): ``cfg`` with ``adv_steps=0`` and that noise reaches
    `target` within `rel_tol` (relative). `cfg` sets the algorithm, the rule and epsilon; the
    largest size noise can reach is the full ball, and a target above it is a ValueError that
    says what the ball allows."""
    if not (target > 0 and math.isfinite(target)):
        raise ValueError(f"target size must be a finite number > 0, got {target!r}")
    if cfg.adv_epsilon is None:
        raise ValueError(
            f"adv_rule={cfg.adv_rule!r} has no ball, so noise of any size is not bounded by one; "
            f"calibrate with adv_rule='projected'"
        )

    def size(std: float) -> float:
        return measured_size(split, batch, cfg.replace(adv_steps=0, adv_noise_std=std, adv_epsilon=cfg.adv_epsilon))

    full = size(1e6 * cfg.adv_epsilon)  # every coordinate clipped onto the ball
    if target > full * (1 + rel_tol):
        raise ValueError(
            f"target size {target:g} is beyond what noise inside adv_epsilon={cfg.adv_epsilon:g} can "
            f"reach ({full:.3g}, the full ball); raise adv_epsilon"
        )
    lo, hi = math.log(cfg.adv_epsilon * 1e-6), math.log(cfg.adv_epsilon * 1e6)
    best = (math.exp(hi), full)
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        got = size(math.exp(mid))
        if abs(got - target) < abs(best[1] - target):
            best = (math.exp(mid), got)
        if abs(got - target) <= rel_tol * target:
            break
        lo, hi = (mid, hi) if got < target else (lo, mid)
    return best
