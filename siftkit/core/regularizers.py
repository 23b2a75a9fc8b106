r"""SMART's and SiFT's adversarial regularizer R, one class whatever the perturbation rule.

Notation: ``z`` is the tensor at the perturbation point (B, L, H), ``c = f(z)`` the clean
logits (reused from the training step), ``delta`` the perturbation in the rule's units.
SMART perturbs raw units (``s = 1``). SiFT perturbs a normalized tensor
``z_hat = (z - mu) / s`` and de-normalizes, ``(z_hat + delta) * s + mu``, which is exactly
``z + s * delta``: every rule feeds the model ``z + s * delta`` (one rounding instead of
four), and the raw perturbation is ``Delta = s * delta``. ``mu`` and ``s`` are recorded
statistics (no gradient). Padding positions never carry a perturbation (their delta is
exactly 0).

``adv_rule`` chooses how delta is made and how R is computed: one class per rule in
`siftkit.core.rules`, whose docstrings give each rule's exact updates (``projected``, the
SMART paper's Algorithm 1, is the default). Forwards: 2 + K (+1 teacher for Bregman,
`siftkit.core.bregman`).

The module has no side effects on the model: it never calls ``.backward()``, never touches
``requires_grad`` or ``.grad`` of parameters; it only reads the split's forwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from siftkit.core.divergences import get_divergence
from siftkit.core.perturbation_specs import PERTURB_POINTS, TINY, check_rule_settings
from siftkit.core.rules import PerturbationRule, rule_named
from siftkit.core.split import EmbeddingSplit


def input_gradient(loss: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """d loss / d delta only (no parameter gradient is computed or accumulated)."""
    (grad,) = torch.autograd.grad(loss, delta)
    return grad


def _check_amounts(
    rule: type[PerturbationRule], adv_rule: str, adv_epsilon, adv_step_size, adv_noise_std, adv_steps
) -> None:
    if not (isinstance(adv_steps, int) and not isinstance(adv_steps, bool) and adv_steps >= 0):
        raise ValueError(f"adv_steps must be an int >= 0 (0: random noise, no ascent), got {adv_steps!r}")
    needs = {"adv_epsilon": rule.has_ball, "adv_step_size": adv_steps >= 1}
    for knob, value in (("adv_epsilon", adv_epsilon), ("adv_step_size", adv_step_size)):
        if needs[knob] and not (value is not None and value > 0 and math.isfinite(value)):
            raise ValueError(f"{knob} must be a finite number > 0, got {value!r}")
    if adv_epsilon is not None and not rule.has_ball:
        raise ValueError(
            f"adv_epsilon is not used by adv_rule={adv_rule!r} (it has no eps-ball); "
            f"leave it unset, got {adv_epsilon!r}"
        )
    if not (adv_noise_std >= 0 and math.isfinite(adv_noise_std)):
        raise ValueError(f"adv_noise_std must be a finite number >= 0, got {adv_noise_std!r}")


def _check_choices(adv_rule: str, adv_norm, divergence, perturb_at) -> None:
    check_rule_settings(adv_rule, adv_norm, divergence)  # the same check as RunConfig's
    if perturb_at not in PERTURB_POINTS:
        raise ValueError(f"perturb_at must be one of {', '.join(map(repr, PERTURB_POINTS))}; got {perturb_at!r}")


class AdversarialRegularizer(nn.Module):
    """The adversarial smoothness regularizer R; `normalized` selects SiFT over SMART.

    Call ``reg(split, batch, clean_logits, z=None)``; it returns the scalar R (unweighted:
    the training loss is ``task + adv_weight * R``). `z` is the tensor at `perturb_at` from
    the clean forward (``split.forward_capture``); when omitted it is recomputed. The rule
    object (``rule``, from `siftkit.core.rules`) reads the ``adv_*`` knobs from here at each
    call, so changing one on a built regularizer takes effect.

    After each call: ``last_perturbation`` is the raw-unit perturbation Delta (B, L, H),
    ``last_delta`` the perturbation in the rule's units (normalized for SiFT),
    ``last_scale`` the statistic s (per token, or per sentence for ``seed_code``) for SiFT
    (None for SMART), ``last_skipped`` whether R was skipped for a non-finite gradient,
    ``last_gradient`` the ascent gradient of the last step (None for ``adv_steps=0``), and
    ``last_stats`` a dict of scalars for the run history. ``skipped`` counts skipped batches.
    """

    normalized: bool = False
    name = "adversarial"

    def __init__(
        self,
        *,
        adv_epsilon: float | None = None,
        adv_step_size: float | None = None,
        adv_noise_std: float,
        adv_steps: int = 1,
        adv_norm: str = "inf",
        adv_weight: float = 1.0,
        divergence: str = "sym_kl",
        perturb_at: str = "embedding_output",
        adv_rule: str = "projected",
    ):
        super().__init__()
        rule = rule_named(adv_rule)
        _check_amounts(rule, adv_rule, adv_epsilon, adv_step_size, adv_noise_std, adv_steps)
        _check_choices(adv_rule, adv_norm, divergence, perturb_at)
        self.rule = rule()
        self.adv_rule = adv_rule
        self.adv_epsilon = None if adv_epsilon is None else float(adv_epsilon)
        self.adv_step_size = None if adv_step_size is None else float(adv_step_size)
        self.adv_noise_std = float(adv_noise_std)
        self.adv_steps = adv_steps
        self.adv_norm = adv_norm
        self.adv_weight = float(adv_weight)
        self.divergence_name = divergence
        self.divergence = get_divergence(divergence)
        self.perturb_at = perturb_at
        self.skipped = 0
        self.last_perturbation: torch.Tensor | None = None
        self.last_delta: torch.Tensor | None = None
        self.last_gradient: torch.Tensor | None = None
        self.last_scale: torch.Tensor | None = None
        self.last_mean: torch.Tensor | None = None
        self.last_skipped = False
        self.last_stats: dict[str, float] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> AdversarialRegularizer:
        return cls(
            adv_epsilon=cfg.adv_epsilon,
            adv_step_size=cfg.adv_step_size,
            adv_noise_std=cfg.adv_noise_std,
            adv_steps=cfg.adv_steps,
            adv_norm=cfg.adv_norm,
            adv_weight=cfg.adv_weight,
            divergence=cfg.divergence,
            perturb_at=cfg.perturb_at,
            adv_rule=cfg.adv_rule,
        )

    def extra_repr(self) -> str:
        def g(x):
            return "-" if x is None else f"{x:g}"

        return (
            f"rule={self.adv_rule}, perturb_at={self.perturb_at}, epsilon={g(self.adv_epsilon)}, "
            f"step={g(self.adv_step_size)}, noise_std={self.adv_noise_std:g}, K={self.adv_steps}, "
            f"norm={self.adv_norm}, weight={self.adv_weight:g}, divergence={self.divergence_name}"
        )

    # ------------------------------------------------------------------------------------
    def token_scale(self, z: torch.Tensor, mask: torch.Tensor):
        """SiFT's (mu, s) as the rule defines them (``rule.statistics``), float32 or wider;
        SMART has none.

        Per token (B, L, 1) over the hidden dimension for ``projected``/``mtdnn`` (population
        std) and ``deberta`` (sqrt(var + 1e-7)); per sentence (B, 1, 1) over all positions and
        features, padding included, unbiased, for ``seed_code``.
        """
        if not self.normalized:
            return None, None
        return self.rule.statistics(z.detach().to(torch.promote_types(z.dtype, torch.float32)), mask)

    # ------------------------------------------------------------------------------------
    def forward(
        self, split: EmbeddingSplit, batch: Mapping[str, Any], clean_logits: torch.Tensor, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        # The ascent needs autograd even when R is only measured (eval, a notebook's no_grad).
        with torch.enable_grad():
            return self._regularize(split, batch, clean_logits, z)

    def _regularize(self, split, batch, clean_logits, z):
        at = self.perturb_at
        if z is None:
            z = split.embed(batch, at)
        mask = batch["attention_mask"].to(device=z.device, dtype=torch.bool)
        mu, sigma = self.token_scale(z, mask)
        # delta and z + delta live in float32 at least (trap: an fp16 step below the format's
        # resolution is lost); a float64 model keeps float64.
        work = torch.promote_types(z.dtype, torch.float32)
        real = mask.unsqueeze(-1).to(work)
        scale = sigma.to(work) if sigma is not None else torch.ones_like(real)
        z_fixed = z.detach().to(work)
        ascended = self._ascend(split, batch, clean_logits.detach(), z, z_fixed, scale, real)
        if ascended is None:
            return self._skip(z)
        delta, g = ascended
        perturbation = (scale * delta).detach()
        # DeBERTa's adversarial branch starts from a detached input; the others train the
        # embeddings below the perturbation point through R as well.
        base = z.to(work) if self.rule.trains_below else z_fixed
        adv_logits = split.forward_from((base + perturbation).to(z.dtype), batch, at)
        r = self.rule.final_loss(adv_logits, clean_logits, self)
        self._record(z, perturbation, delta.detach(), g, mu, sigma, mask)
        return r

    def _ascend(self, split, batch, target, z, z_fixed, scale, real):
        """(delta, the last ascent gradient or None) after K steps; None for a non-finite gradient."""
        delta = self._initial(z.shape, z.device, z_fixed.dtype, real)
        g = None
        for _ in range(self.adv_steps):
            delta.requires_grad_(True)
            adv_logits = split.forward_from((z_fixed + scale * delta).to(z.dtype), batch, self.perturb_at)
            g = input_gradient(self.rule.ascent_loss(adv_logits, target, self), delta)
            if not bool(torch.isfinite(g).all()):
                return None
            delta = self.rule.step(delta.detach(), g, self) * real
        return delta, g

    def _initial(self, shape, device, work, real) -> torch.Tensor:
        delta = self.rule.noise(shape, device, work, self) * real
        if self.adv_steps == 0:  # the random-noise control: delta_0 as the rule shapes it
            delta = self.rule.without_ascent(delta, real, self)
        return delta

    def _skip(self, z: torch.Tensor) -> torch.Tensor:
        self.skipped += 1
        self.last_skipped = True
        self.last_perturbation, self.last_delta, self.last_gradient = None, None, None
        self.last_scale, self.last_mean = None, None
        self.last_stats = {
            "perturbation_norm": float("nan"),
            "relative_perturbation": float("nan"),
            "ascent_cosine": float("nan"),
        }
        return torch.zeros((), device=z.device)

    @torch.no_grad()
    def _record(self, z, perturbation, delta, g, mu, sigma, mask) -> None:
        self.last_skipped = False
        self.last_perturbation, self.last_delta = perturbation, delta
        self.last_gradient = None if g is None else g.detach()
        self.last_scale, self.last_mean = sigma, mu
        n = mask.sum().clamp_min(1)
        pert_norm = perturbation.norm(dim=-1)
        token_norm = z.detach().float().norm(dim=-1).clamp_min(TINY)
        cosine = float("nan")  # no ascent (adv_steps=0): no gradient to compare with
        if g is not None:
            cos_t = F.cosine_similarity(delta, g.to(delta.dtype), dim=-1)
            cosine = float((cos_t * mask).sum() / n)
        self.last_stats = {
            # mean over real tokens of ||Delta_t|| in raw units at the perturbation point
            "perturbation_norm": float((pert_norm * mask).sum() / n),
            # ... and relative to each token's own norm ||z_t||
            "relative_perturbation": float((pert_norm / token_norm * mask).sum() / n),
            # how adversarial delta is: its cosine with the last ascent gradient, per token
            # (about 0 for a random direction, about 0.8 for sign(g) in 384 dimensions)
            "ascent_cosine": cosine,
        }


class SMART(AdversarialRegularizer):
    """SMART's smoothness-inducing adversarial regularizer: raw-unit perturbation."""

    normalized = False
    name = "smart"


class SiFT(AdversarialRegularizer):
    """SiFT: the same regularizer in the per-token normalized space (scale-invariant)."""

    normalized = True
    name = "sift"


REGULARIZERS = {"smart": SMART, "sift": SiFT}
