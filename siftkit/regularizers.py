r"""SMART's and SiFT's adversarial regularizer, and SMART's Bregman proximal point term.

For the tensor ``z`` at the perturbation point and the clean logits ``c = f(z)``:

1. ``delta ~ N(0, noise_std^2)`` on real tokens; padded positions stay exactly 0.
2. K times: ``g = d ls(f(z + s*delta), c.detach()) / d delta`` (``torch.autograd.grad``
   w.r.t. delta alone); ``delta <- delta + step_size * g / ||g||`` per token in the chosen
   norm; project each token's delta onto ``||delta|| <= epsilon``.
3. ``R = ls(f(z + s*delta), c)`` with gradient into both branches.

SMART perturbs raw units: ``s = 1``. SiFT perturbs the per-token *normalized* tensor
``z_hat = (z - mu_t) / sigma_t`` and de-normalizes, ``(z_hat + delta) * sigma_t + mu_t``,
which is exactly ``z + sigma_t * delta``: so ``s = sigma_t`` and the raw perturbation is
``Delta = sigma_t * delta``. We feed the model ``z + sigma_t * delta`` because it is the same
number with one rounding instead of four. ``mu_t`` and ``sigma_t`` are recorded statistics
(taken from ``z`` without gradient), as in the paper's "record the mean and standard
deviation"; they are population statistics over the hidden dimension of each real token.

The module has no side effects on the model: it never calls ``.backward()``, never touches
``requires_grad`` or ``.grad`` of parameters; it only reads the split's forwards.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import torch
from torch import nn

from siftkit.divergences import get_divergence
from siftkit.split import PERTURB_POINTS, EmbeddingSplit, unwrap

_TINY = 1e-12  # guards 0/0 for an all-zero gradient or a constant token; not epsilon


def input_gradient(loss: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """d loss / d delta only (no parameter gradient is computed or accumulated)."""
    (grad,) = torch.autograd.grad(loss, delta)
    return grad


class AdversarialRegularizer(nn.Module):
    """The adversarial smoothness regularizer R; `normalized` selects SiFT over SMART.

    Call ``reg(split, batch, clean_logits, z=None)``; it returns the scalar R (unweighted:
    the training loss is ``task + adv_weight * R``). `z` is the tensor at `perturb_at` from
    the clean forward (``split.forward_capture``); when omitted it is recomputed.

    After each call: ``last_perturbation`` is the raw-unit perturbation Delta (B, L, H),
    ``last_scale`` the per-token sigma_t (B, L, 1) for SiFT (None for SMART),
    ``last_skipped`` whether R was skipped for a non-finite gradient, and ``last_stats`` a
    dict of scalars for the run history. ``skipped`` counts skipped batches.
    """

    normalized: bool = False
    name = "adversarial"

    def __init__(self, *, adv_epsilon: float, adv_step_size: float, adv_noise_std: float,
                 adv_steps: int = 1, adv_norm: str = "inf", adv_weight: float = 1.0,
                 divergence: str = "sym_kl", perturb_at: str = "embedding_output"):
        super().__init__()
        for knob, value in (("adv_epsilon", adv_epsilon), ("adv_step_size", adv_step_size)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{knob} must be a finite number > 0, got {value!r}")
        if not (adv_noise_std >= 0 and math.isfinite(adv_noise_std)):
            raise ValueError(f"adv_noise_std must be a finite number >= 0, got {adv_noise_std!r}")
        if not (isinstance(adv_steps, int) and adv_steps >= 1):
            raise ValueError(f"adv_steps must be an int >= 1, got {adv_steps!r}")
        if adv_norm not in ("inf", "l2"):
            raise ValueError(f"adv_norm must be 'inf' or 'l2'; got {adv_norm!r}")
        if perturb_at not in PERTURB_POINTS:
            raise ValueError(f"perturb_at must be one of {', '.join(map(repr, PERTURB_POINTS))}; got {perturb_at!r}")
        self.adv_epsilon = float(adv_epsilon)
        self.adv_step_size = float(adv_step_size)
        self.adv_noise_std = float(adv_noise_std)
        self.adv_steps = adv_steps
        self.adv_norm = adv_norm
        self.adv_weight = float(adv_weight)
        self.divergence_name = divergence
        self.divergence = get_divergence(divergence)
        self.perturb_at = perturb_at
        self.skipped = 0
        self.last_perturbation: torch.Tensor | None = None
        self.last_scale: torch.Tensor | None = None
        self.last_mean: torch.Tensor | None = None
        self.last_skipped = False
        self.last_stats: dict[str, float] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> "AdversarialRegularizer":
        return cls(adv_epsilon=cfg.adv_epsilon, adv_step_size=cfg.adv_step_size,
                   adv_noise_std=cfg.adv_noise_std, adv_steps=cfg.adv_steps, adv_norm=cfg.adv_norm,
                   adv_weight=cfg.adv_weight, divergence=cfg.divergence, perturb_at=cfg.perturb_at)

    def extra_repr(self) -> str:
        return (f"perturb_at={self.perturb_at}, epsilon={self.adv_epsilon:g}, step={self.adv_step_size:g}, "
                f"noise_std={self.adv_noise_std:g}, K={self.adv_steps}, norm={self.adv_norm}, "
                f"weight={self.adv_weight:g}, divergence={self.divergence_name}")

    # ------------------------------------------------------------------------------------
    def token_scale(self, z: torch.Tensor, mask: torch.Tensor):
        """Per-token (mu_t, sigma_t), each (B, L, 1), float32 or wider; SMART has none."""
        if not self.normalized:
            return None, None
        zw = z.detach().to(torch.promote_types(z.dtype, torch.float32))
        mu = zw.mean(-1, keepdim=True)
        sigma = zw.var(-1, unbiased=False, keepdim=True).sqrt().clamp_min(_TINY)
        # Padding never enters a statistic that is used: its delta is 0, and a neutral
        # scale keeps a padded row of zeros from producing 0/0.
        real = mask.unsqueeze(-1)
        return torch.where(real, mu, 0.0), torch.where(real, sigma, 1.0)

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        """g / ||g|| per token in the step norm (0 where g is 0, e.g. on padding)."""
        if self.adv_norm == "inf":
            norm = g.abs().amax(-1, keepdim=True)
        else:
            norm = g.norm(dim=-1, keepdim=True)
        return g / norm.clamp_min(_TINY)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """Each token's delta onto the ball ||delta|| <= epsilon (a real bound)."""
        eps = self.adv_epsilon
        if self.adv_norm == "inf":
            return delta.clamp(-eps, eps)
        norm = delta.norm(dim=-1, keepdim=True)
        return delta * (eps / norm.clamp_min(_TINY)).clamp(max=1.0)

    # ------------------------------------------------------------------------------------
    def forward(self, split: EmbeddingSplit, batch: Mapping[str, Any], clean_logits: torch.Tensor,
                z: torch.Tensor | None = None) -> torch.Tensor:
        # The ascent needs autograd even when R is only measured (eval, a notebook's no_grad).
        with torch.enable_grad():
            return self._regularize(split, batch, clean_logits, z)

    def _regularize(self, split, batch, clean_logits, z):
        at = self.perturb_at
        if z is None:
            z = split.embed(batch, at)
        mask = batch["attention_mask"].to(device=z.device, dtype=torch.bool)
        real = mask.unsqueeze(-1).float()
        mu, sigma = self.token_scale(z, mask)
        scale = sigma if sigma is not None else torch.ones_like(real)
        target = clean_logits.detach()
        # delta and z + delta live in float32 at least (trap: an fp16 step below the format's
        # resolution is lost); a float64 model keeps float64.
        work = torch.promote_types(z.dtype, torch.float32)
        z_fixed = z.detach().to(work)
        real, scale = real.to(work), scale.to(work)
        delta = torch.randn(z.shape, device=z.device, dtype=work) * self.adv_noise_std * real
        for _ in range(self.adv_steps):
            delta.requires_grad_(True)
            adv_logits = split.forward_from((z_fixed + scale * delta).to(z.dtype), batch, at)
            g = input_gradient(self.divergence(adv_logits, target), delta)
            if not bool(torch.isfinite(g).all()):
                return self._skip(z)
            delta = self.project(delta.detach() + self.adv_step_size * self._direction(g) * real) * real

        perturbation = (scale * delta).detach()
        adv_logits = split.forward_from((z.to(work) + perturbation).to(z.dtype), batch, at)
        r = self.divergence(adv_logits, clean_logits)
        self._record(z, perturbation, mu, sigma, mask, skipped=False)
        return r

    def _skip(self, z: torch.Tensor) -> torch.Tensor:
        self.skipped += 1
        self.last_skipped = True
        self.last_perturbation, self.last_scale, self.last_mean = None, None, None
        self.last_stats = {"perturbation_norm": float("nan"), "relative_perturbation": float("nan")}
        return torch.zeros((), device=z.device)

    @torch.no_grad()
    def _record(self, z, perturbation, mu, sigma, mask, *, skipped: bool) -> None:
        self.last_skipped = skipped
        self.last_perturbation = perturbation
        self.last_scale, self.last_mean = sigma, mu
        n = mask.sum().clamp_min(1)
        pert_norm = perturbation.norm(dim=-1)
        token_norm = z.detach().float().norm(dim=-1).clamp_min(_TINY)
        self.last_stats = {
            # mean over real tokens of ||Delta_t|| in raw units at the perturbation point
            "perturbation_norm": float((pert_norm * mask).sum() / n),
            # ... and relative to each token's own norm ||z_t||
            "relative_perturbation": float((pert_norm / token_norm * mask).sum() / n),
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


class BregmanProximalPoint(nn.Module):
    r"""SMART's Bregman proximal point term with an EMA teacher.

    The teacher ``theta~`` starts as a copy of the model and follows it after every
    optimizer step, ``theta~ <- (1 - beta) * theta + beta * theta~`` (``update``). The term
    is ``ls(f(x; theta), f(x; theta~))``: the teacher forward runs without gradient and in
    eval mode, so the target is a fixed function of the previous iterates.
    """

    def __init__(self, model: nn.Module, *, bregman_beta: float = 0.99, divergence: str = "sym_kl"):
        super().__init__()
        if not 0.0 <= bregman_beta < 1.0:
            raise ValueError(f"bregman_beta must be in [0, 1), got {bregman_beta!r}")
        self.beta = float(bregman_beta)
        self.divergence = get_divergence(divergence)
        teacher = copy.deepcopy(unwrap(model))
        teacher.eval()
        teacher.requires_grad_(False)
        # Kept out of the module tree so `.parameters()` of a parent never sees it.
        self.__dict__["teacher"] = teacher

    def forward(self, batch: Mapping[str, Any], student_logits: torch.Tensor) -> torch.Tensor:
        from siftkit.split import model_inputs

        with torch.no_grad():
            teacher_logits = self.teacher(**model_inputs(batch)).logits
        return self.divergence(student_logits, teacher_logits)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        student = unwrap(model)
        t_params = list(self.teacher.parameters())
        s_params = [p.detach() for p in student.parameters()]
        # lerp: t + (1 - beta) (s - t) = (1 - beta) s + beta t
        torch._foreach_lerp_(t_params, s_params, 1.0 - self.beta)
        for t_buf, s_buf in zip(self.teacher.buffers(), student.buffers()):
            t_buf.copy_(s_buf)

    def state_dict_for_checkpoint(self) -> dict[str, torch.Tensor]:
        return self.teacher.state_dict()

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        self.teacher.load_state_dict(state)
