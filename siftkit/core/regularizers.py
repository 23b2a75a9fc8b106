r"""SMART's and SiFT's adversarial regularizer under four perturbation rules, and SMART's
Bregman proximal point term.

Notation: ``z`` is the tensor at the perturbation point (B, L, H), ``c = f(z)`` the clean
logits (reused from the training step), ``sg[.]`` stop-gradient, ``p_c`` and ``p_a`` the
clean and adversarial class distributions. SMART perturbs raw units (``s = 1``). SiFT
perturbs a normalized tensor ``z_hat = (z - mu) / s`` and de-normalizes,
``(z_hat + delta) * s + mu``, which is exactly ``z + s * delta``: every rule feeds the model
``z + s * delta`` (one rounding instead of four), and the raw perturbation is
``Delta = s * delta``. ``mu`` and ``s`` are recorded statistics (no gradient).
Padding positions never carry a perturbation (their delta is exactly 0).

``adv_rule`` chooses how delta is made and how R is computed:

``projected`` (default; the SMART paper's Algorithm 1, Jiang et al. 2020)
    delta_0 ~ N(0, sigma^2); K times: ``g = d ls(f(z + s delta), sg[c]) / d delta``,
    ``delta <- Proj_eps(delta + eta * g / ||g||)`` per token in ``adv_norm`` (a real
    eps-ball); ``R = ls(f(z + s delta), c)`` with gradient into both branches
    (``ls = divergence``). SiFT: ``mu_t, s_t`` = mean and population std of each real token
    over the hidden dimension.
``mtdnn`` (namisan/mt-dnn ``mt_dnn/perturbation.py`` SmartPerturbation and ``loss.py``)
    delta_0 ~ N(0, sigma^2); K times: ``g = d [sum_b stable_kl(f(z + s delta), sg[c])] / d delta``,
    ``u = delta + eta * g``, ``delta <- u / (||u|| + 1e-6)`` per token. There is no ball: each
    token's delta ends with norm ``||u|| / (||u|| + 1e-6)``, just below 1 whatever sigma and eta
    (about 0.97 at the published sigma = 1e-5 on MiniLM, where the guard is not negligible).
    ``R = KL(sg[p_c] || p_a) + KL(sg[p_a] || p_c)``, batch mean: each KL's first argument (its
    weights and its log) is detached, so R's gradient reaches the adversarial branch through
    ``log p_a`` and the clean branch through ``log p_c`` — "half-detached". Its value is the
    symmetric KL; its gradient is ``p_a - p_c`` w.r.t. the adversarial logits and
    ``p_c - p_a`` w.r.t. the clean ones. SiFT: statistics as ``projected``.
    ``stable_kl(a, t) = 2 sum_k p_a,k (r(p_a,k) - r(p_t,k))`` with
    ``r(p) = -log(1 / (p + 1e-6) - 1 + 1e-6)`` detached: the gradient flows only through the
    weights ``p_a``.
``deberta`` (microsoft/DeBERTa ``DeBERTa/sift/sift.py`` PerturbationLayer, AdversarialLearner)
    delta_0 = clamp(N(0, sigma^2), -2 sigma, 2 sigma); K times (DeBERTa: once):
    ``g = d [sum_b CE(sg[p_c], p_a)] / d delta``, ``delta <- delta + eta * g / (max|g| + 1e-6)``
    per token, no projection. The adversarial branch sees ``sg[z] + sg[s] delta``: R trains
    the layers above the perturbation point, not the embeddings below it. R has the
    gradient of the half-detached symmetric KL above; DeBERTa writes it as a symmetric cross
    entropy, whose value adds the two (detached-weight) entropies, so siftkit records the
    symmetric-KL value — the same gradient, a value that is 0 at zero perturbation. SiFT:
    ``s_t = sqrt(var_t + 1e-7)``, a LayerNorm without affine at eps 1e-7 (DeBERTa's, at the
    embedding LayerNorm's input, i.e. ``perturb_at="pre_layernorm"``).
``seed_code`` (the seed paper's notebooks, wangluheng328/SiFT-Project)
    SiFT: ``mu`` and ``s`` per *sentence*: mean and unbiased std over all positions (padding
    included) and features. delta as ``mtdnn``. ``R = stable_kl(c, a)`` with batch mean: the
    gradient reaches the clean branch only (through ``p_c``); it is not a divergence and can
    be negative (recorded as it is). The seed code also took its ascent gradient on the
    normalized tensor fed to the encoder without de-normalization; siftkit takes it at the
    de-normalized point, which is what its final R sees (at the seed's sizes the gradient
    term is negligible next to the noise, so delta is the same random direction).

``adv_steps = 0`` is the random-noise control (R3F-style, Aghajanyan et al. 2020): no ascent;
delta_0 projected onto the ball (``projected``), scaled to unit norm per token (``mtdnn``,
``seed_code``) or as drawn (``deberta``). Forwards: 2 + K (+1 teacher for Bregman).

The module has no side effects on the model: it never calls ``.backward()``, never touches
``requires_grad`` or ``.grad`` of parameters; it only reads the split's forwards.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from siftkit.core.divergences import at_least_float32 as wide
from siftkit.core.divergences import get_divergence, symmetric_kl
from siftkit.core.split import PERTURB_POINTS, EmbeddingSplit, unwrap

ADV_RULES = ("projected", "mtdnn", "deberta", "seed_code")
_NO_BALL = ("mtdnn", "deberta", "seed_code")  # rules without an eps-ball
_INF_ONLY = ("deberta", "seed_code")  # rules published with the per-token max only
_GUARD = 1e-6  # the public codes' division guard (mt-dnn's epsilon, DeBERTa's 1e-6)
_DEBERTA_LN_EPS = 1e-7  # DeBERTa's PerturbationLayer LayerNorm eps
_TINY = 1e-12  # guards 0/0 for a constant token; not epsilon


def input_gradient(loss: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """d loss / d delta only (no parameter gradient is computed or accumulated)."""
    (grad,) = torch.autograd.grad(loss, delta)
    return grad


def stable_kl(logits: torch.Tensor, target: torch.Tensor, *, mean: bool) -> torch.Tensor:
    """mt-dnn's ``stable_kl``: ``2 sum_k p_k (r(p_k) - r(y_k))``, r detached; sum or batch mean.

    ``p = softmax(logits)``, ``y = softmax(target)``, ``r(p) = -log(1/(p + 1e-6) - 1 + 1e-6)``
    (about the log-odds). Only the weights ``p`` carry gradient, so it is a surrogate, not a
    divergence: its value can be negative.
    """
    p = F.log_softmax(wide(logits), dim=-1).exp()
    y = F.log_softmax(wide(target), dim=-1).exp()
    rp = -(1.0 / (p + _GUARD) - 1 + _GUARD).detach().log()
    ry = -(1.0 / (y + _GUARD) - 1 + _GUARD).detach().log()
    total = (p * (rp - ry) * 2).sum()
    return total / p.shape[0] if mean else total


def half_detached_sym_kl(adv_logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """``KL(sg[p_c] || p_a) + KL(sg[p_a] || p_c)``, batch mean (mt-dnn's SymKlCriterion).

    The value is the symmetric KL (computed by the stable `symmetric_kl`); the gradient is
    that of the form with detached weights: ``p_a - p_c`` into the adversarial logits and
    ``p_c - p_a`` into the clean ones.
    """
    log_a = F.log_softmax(wide(adv_logits), dim=-1)
    log_c = F.log_softmax(wide(clean_logits), dim=-1)
    p_a, p_c = log_a.exp().detach(), log_c.exp().detach()
    surrogate = (-(p_c * log_a).sum(-1) - (p_a * log_c).sum(-1)).mean()
    value = symmetric_kl(adv_logits.detach(), clean_logits.detach())
    return value + (surrogate - surrogate.detach())


class AdversarialRegularizer(nn.Module):
    """The adversarial smoothness regularizer R; `normalized` selects SiFT over SMART.

    Call ``reg(split, batch, clean_logits, z=None)``; it returns the scalar R (unweighted:
    the training loss is ``task + adv_weight * R``). `z` is the tensor at `perturb_at` from
    the clean forward (``split.forward_capture``); when omitted it is recomputed.

    After each call: ``last_perturbation`` is the raw-unit perturbation Delta (B, L, H),
    ``last_delta`` the perturbation in the rule's units (normalized for SiFT),
    ``last_scale`` the statistic s (per token, or per sentence for ``seed_code``) for SiFT
    (None for SMART), ``last_skipped`` whether R was skipped for a non-finite gradient,
    ``last_gradient`` the ascent gradient of the last step (None for ``adv_steps=0``), and
    ``last_stats`` a dict of scalars for the run history. ``skipped`` counts skipped batches.
    """

    normalized: bool = False
    name = "adversarial"

    def __init__(self, *, adv_epsilon: float | None = None, adv_step_size: float | None = None,
                 adv_noise_std: float, adv_steps: int = 1, adv_norm: str = "inf", adv_weight: float = 1.0,
                 divergence: str = "sym_kl", perturb_at: str = "embedding_output", adv_rule: str = "projected"):
        super().__init__()
        if adv_rule not in ADV_RULES:
            raise ValueError(f"adv_rule must be one of {', '.join(map(repr, ADV_RULES))}; got {adv_rule!r}")
        if not (isinstance(adv_steps, int) and not isinstance(adv_steps, bool) and adv_steps >= 0):
            raise ValueError(f"adv_steps must be an int >= 0 (0: random noise, no ascent), got {adv_steps!r}")
        needs = {"adv_epsilon": adv_rule == "projected", "adv_step_size": adv_steps >= 1}
        for knob, value in (("adv_epsilon", adv_epsilon), ("adv_step_size", adv_step_size)):
            if needs[knob] and not (value is not None and value > 0 and math.isfinite(value)):
                raise ValueError(f"{knob} must be a finite number > 0, got {value!r}")
        if adv_epsilon is not None and adv_rule in _NO_BALL:
            raise ValueError(f"adv_epsilon is not used by adv_rule={adv_rule!r} (it has no eps-ball); "
                             f"leave it unset, got {adv_epsilon!r}")
        if not (adv_noise_std >= 0 and math.isfinite(adv_noise_std)):
            raise ValueError(f"adv_noise_std must be a finite number >= 0, got {adv_noise_std!r}")
        if adv_norm not in ("inf", "l2"):
            raise ValueError(f"adv_norm must be 'inf' or 'l2'; got {adv_norm!r}")
        if adv_norm != "inf" and adv_rule in _INF_ONLY:
            raise ValueError(f"adv_rule={adv_rule!r} normalizes by each token's max |.|; adv_norm must be 'inf', "
                             f"got {adv_norm!r}")
        if divergence != "sym_kl" and adv_rule != "projected":
            raise ValueError(f"adv_rule={adv_rule!r} uses its own published loss forms; divergence must stay "
                             f"'sym_kl', got {divergence!r}")
        if perturb_at not in PERTURB_POINTS:
            raise ValueError(f"perturb_at must be one of {', '.join(map(repr, PERTURB_POINTS))}; got {perturb_at!r}")
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
    def from_config(cls, cfg: Any) -> "AdversarialRegularizer":
        return cls(adv_epsilon=cfg.adv_epsilon, adv_step_size=cfg.adv_step_size,
                   adv_noise_std=cfg.adv_noise_std, adv_steps=cfg.adv_steps, adv_norm=cfg.adv_norm,
                   adv_weight=cfg.adv_weight, divergence=cfg.divergence, perturb_at=cfg.perturb_at,
                   adv_rule=cfg.adv_rule)

    def extra_repr(self) -> str:
        def g(x):
            return "-" if x is None else f"{x:g}"
        return (f"rule={self.adv_rule}, perturb_at={self.perturb_at}, epsilon={g(self.adv_epsilon)}, "
                f"step={g(self.adv_step_size)}, noise_std={self.adv_noise_std:g}, K={self.adv_steps}, "
                f"norm={self.adv_norm}, weight={self.adv_weight:g}, divergence={self.divergence_name}")

    # ------------------------------------------------------------------------------------
    def token_scale(self, z: torch.Tensor, mask: torch.Tensor):
        """SiFT's (mu, s) as the rule defines them, float32 or wider; SMART has none.

        Per token (B, L, 1) over the hidden dimension for ``projected``/``mtdnn`` (population
        std) and ``deberta`` (sqrt(var + 1e-7)); per sentence (B, 1, 1) over all positions and
        features, padding included, unbiased, for ``seed_code``.
        """
        if not self.normalized:
            return None, None
        zw = z.detach().to(torch.promote_types(z.dtype, torch.float32))
        if self.adv_rule == "seed_code":
            flat = zw.flatten(1)
            return flat.mean(1).view(-1, 1, 1), flat.std(1).clamp_min(_TINY).view(-1, 1, 1)
        mu = zw.mean(-1, keepdim=True)
        var = zw.var(-1, unbiased=False, keepdim=True)
        sigma = (var + _DEBERTA_LN_EPS).sqrt() if self.adv_rule == "deberta" else var.sqrt().clamp_min(_TINY)
        # Padding never enters a statistic that is used: its delta is 0, and a neutral
        # scale keeps a padded row of zeros from producing 0/0.
        real = mask.unsqueeze(-1)
        return torch.where(real, mu, 0.0), torch.where(real, sigma, 1.0)

    def _token_norm(self, v: torch.Tensor) -> torch.Tensor:
        return v.abs().amax(-1, keepdim=True) if self.adv_norm == "inf" else v.norm(dim=-1, keepdim=True)

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        """g / ||g|| per token in the step norm: exactly unit wherever g != 0, 0 where g is 0.

        Scale-free: g is first divided by its own per-token max |g|, so a tiny gradient
        (1e-20, as at a fresh classifier head) still gives a unit step; a fixed guard such as
        ``norm.clamp_min(1e-12)`` would shorten it.
        """
        peak = g.abs().amax(-1, keepdim=True)
        g = g / torch.where(peak > 0, peak, torch.ones_like(peak))
        if self.adv_norm == "inf":
            return g
        norm = g.norm(dim=-1, keepdim=True)
        return g / torch.where(norm > 0, norm, torch.ones_like(norm))

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """Each token's delta onto the ball ||delta|| <= epsilon (a real bound)."""
        eps = self.adv_epsilon
        if self.adv_norm == "inf":
            return delta.clamp(-eps, eps)
        norm = delta.norm(dim=-1, keepdim=True)
        return delta * (eps / norm.clamp_min(_TINY)).clamp(max=1.0)

    def _unit(self, u: torch.Tensor) -> torch.Tensor:
        """mt-dnn's normalization: u / (||u|| + 1e-6) per token."""
        return u / (self._token_norm(u) + _GUARD)

    # --- the four rules, step by step ----------------------------------------------------
    def _initial(self, shape, device, work, real) -> torch.Tensor:
        sigma = self.adv_noise_std
        delta = torch.randn(shape, device=device, dtype=work) * sigma
        if self.adv_rule == "deberta":
            delta = delta.clamp(-2 * sigma, 2 * sigma)
        delta = delta * real
        if self.adv_steps == 0:  # the random-noise control: delta_0 as the rule shapes it
            if self.adv_rule == "projected":
                delta = self.project(delta)
            elif self.adv_rule in ("mtdnn", "seed_code"):
                delta = self._unit(delta) * real
        return delta

    def _ascent_loss(self, adv_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.adv_rule == "projected":
            return self.divergence(adv_logits, target)
        if self.adv_rule == "deberta":
            # sum over the batch of CE(sg[p_c], p_a): the part of DeBERTa's symmetric form
            # that depends on delta when the target is detached
            return -(F.softmax(wide(target), -1) * F.log_softmax(wide(adv_logits), -1)).sum()
        return stable_kl(adv_logits, target, mean=False)  # mtdnn, seed_code: summed

    def _step(self, delta: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        eta = self.adv_step_size
        if self.adv_rule == "projected":
            return self.project(delta + eta * self._direction(g))
        if self.adv_rule == "deberta":
            return delta + eta * g / (g.abs().amax(-1, keepdim=True) + _GUARD)
        return self._unit(delta + eta * g)  # mtdnn, seed_code

    def _final_loss(self, adv_logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
        if self.adv_rule == "projected":
            return self.divergence(adv_logits, clean_logits)
        if self.adv_rule == "seed_code":
            return stable_kl(clean_logits, adv_logits, mean=True)
        return half_detached_sym_kl(adv_logits, clean_logits)  # mtdnn, deberta

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
        mu, sigma = self.token_scale(z, mask)
        target = clean_logits.detach()
        # delta and z + delta live in float32 at least (trap: an fp16 step below the format's
        # resolution is lost); a float64 model keeps float64.
        work = torch.promote_types(z.dtype, torch.float32)
        real = mask.unsqueeze(-1).to(work)
        scale = sigma.to(work) if sigma is not None else torch.ones_like(real)
        z_fixed = z.detach().to(work)
        delta = self._initial(z.shape, z.device, work, real)
        g = None
        for _ in range(self.adv_steps):
            delta.requires_grad_(True)
            adv_logits = split.forward_from((z_fixed + scale * delta).to(z.dtype), batch, at)
            g = input_gradient(self._ascent_loss(adv_logits, target), delta)
            if not bool(torch.isfinite(g).all()):
                return self._skip(z)
            delta = self._step(delta.detach(), g) * real

        perturbation = (scale * delta).detach()
        # DeBERTa's adversarial branch starts from a detached input; the others train the
        # embeddings below the perturbation point through R as well.
        base = z_fixed if self.adv_rule == "deberta" else z.to(work)
        adv_logits = split.forward_from((base + perturbation).to(z.dtype), batch, at)
        r = self._final_loss(adv_logits, clean_logits)
        self._record(z, perturbation, delta.detach(), g, mu, sigma, mask)
        return r

    def _skip(self, z: torch.Tensor) -> torch.Tensor:
        self.skipped += 1
        self.last_skipped = True
        self.last_perturbation, self.last_delta, self.last_gradient = None, None, None
        self.last_scale, self.last_mean = None, None
        self.last_stats = {"perturbation_norm": float("nan"), "relative_perturbation": float("nan"),
                           "ascent_cosine": float("nan")}
        return torch.zeros((), device=z.device)

    @torch.no_grad()
    def _record(self, z, perturbation, delta, g, mu, sigma, mask) -> None:
        self.last_skipped = False
        self.last_perturbation, self.last_delta = perturbation, delta
        self.last_gradient = None if g is None else g.detach()
        self.last_scale, self.last_mean = sigma, mu
        n = mask.sum().clamp_min(1)
        pert_norm = perturbation.norm(dim=-1)
        token_norm = z.detach().float().norm(dim=-1).clamp_min(_TINY)
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
        from siftkit.core.split import model_inputs

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

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Restart the teacher from the model's current weights (a stage whose Bregman term
        starts fresh: ``adv_stages``, or a re-initialised head)."""
        self.teacher.load_state_dict(unwrap(model).state_dict())

    def state_dict_for_checkpoint(self) -> dict[str, torch.Tensor]:
        return self.teacher.state_dict()

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        self.teacher.load_state_dict(state)


class L2SP:
    r"""L2-SP (Li, Grandvalet & Davoine, ICML 2018): ``||theta - theta_0||^2`` summed over the
    pre-trained encoder's parameters, toward the weights they had when this object was built.

    The encoder is the model's ``base_model`` (HF's own split between the pre-trained body and
    the task head); the classification head is new, so it has no starting point to stay near
    and is left out, as in the paper. The weight alpha is applied by the caller. Its gradient is
    ``2 (theta - theta_0)``: it pulls every encoder weight back toward the pre-trained one.
    """

    def __init__(self, model: nn.Module):
        base = unwrap(model).base_model
        self.params = [p for p in base.parameters() if p.requires_grad]
        self.anchor = [p.detach().clone() for p in self.params]

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=self.params[0].device)
        for p, p0 in zip(self.params, self.anchor):
            total = total + (p.float() - p0.float()).pow(2).sum()
        return total
