r"""The four perturbation rules (``adv_rule``) of the adversarial regularizer, one class each.

Notation: ``z`` is the tensor at the perturbation point (B, L, H), ``c = f(z)`` the clean
logits (reused from the training step), ``sg[.]`` stop-gradient, ``p_c`` and ``p_a`` the
clean and adversarial class distributions, ``sigma`` the noise std (``adv_noise_std``),
``eta`` the step size, ``K`` the number of ascent steps. SMART perturbs raw units
(``s = 1``); SiFT perturbs ``z_hat = (z - mu) / s`` and feeds the model ``z + s * delta``
(`siftkit.core.regularizers`). A rule decides SiFT's statistics ``mu, s``, the initial
noise delta_0, the loss the ascent climbs, the ascent step, the final R, and whether R's
adversarial branch reaches the layers below the perturbation point.

``K = 0`` is the random-noise control (R3F-style, Aghajanyan et al. 2020): no ascent, delta_0
shaped as each rule's ``without_ascent`` says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from siftkit.core.divergences import at_least_float32 as wide
from siftkit.core.divergences import symmetric_kl
from siftkit.core.perturbation_specs import RULE_SPECS, TINY, rule_spec

_GUARD = 1e-6  # the public codes' division guard (mt-dnn's epsilon, DeBERTa's 1e-6)
_DEBERTA_LN_EPS = 1e-7  # DeBERTa's PerturbationLayer LayerNorm eps


# --- the loss forms of the public codes ------------------------------------------------


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


# --- per-token norms -------------------------------------------------------------------


def token_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """||v_t|| per token (B, L, 1) in ``norm`` ("inf": max |.|, "l2")."""
    return v.abs().amax(-1, keepdim=True) if norm == "inf" else v.norm(dim=-1, keepdim=True)


def unit_direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """g / ||g|| per token: exactly unit wherever g != 0, 0 where g is 0.

    Scale-free: g is first divided by its own per-token max |g|, so a tiny gradient
    (1e-20, as at a fresh classifier head) still gives a unit step; a fixed guard such as
    ``norm.clamp_min(1e-12)`` would shorten it.
    """
    peak = g.abs().amax(-1, keepdim=True)
    g = g / torch.where(peak > 0, peak, torch.ones_like(peak))
    if norm == "inf":
        return g
    length = g.norm(dim=-1, keepdim=True)
    return g / torch.where(length > 0, length, torch.ones_like(length))


def project_onto_ball(delta: torch.Tensor, epsilon: float, norm: str) -> torch.Tensor:
    """Each token's delta onto the ball ||delta|| <= epsilon (a real bound)."""
    if norm == "inf":
        return delta.clamp(-epsilon, epsilon)
    length = delta.norm(dim=-1, keepdim=True)
    return delta * (epsilon / length.clamp_min(TINY)).clamp(max=1.0)


def guarded_unit(u: torch.Tensor, norm: str) -> torch.Tensor:
    """mt-dnn's normalization: u / (||u|| + 1e-6) per token."""
    return u / (token_norm(u, norm) + _GUARD)


# --- the rules -------------------------------------------------------------------------


class Knobs(Protocol):
    """What a rule reads from its regularizer, at each call (a notebook may change them)."""

    adv_epsilon: float | None
    adv_step_size: float | None
    adv_noise_std: float
    adv_norm: str
    divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PerturbationRule:
    """The hooks `AdversarialRegularizer` calls; the defaults are what most rules share.

    Class attributes say which knobs a rule takes: ``has_ball`` (it uses ``adv_epsilon``),
    ``inf_only`` (published with the per-token max only), ``any_divergence`` (R may use any
    ``divergence``; otherwise the rule's own loss forms), ``trains_below`` (R's adversarial
    branch trains the layers below the perturbation point too). A subclass names itself
    (``name``) and gets them from its `RuleSpec` (`siftkit.core.perturbation_specs`), the one
    place that config's checks read too.
    """

    name: str
    has_ball: bool
    inf_only: bool
    any_divergence: bool
    trains_below: bool

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        spec = RULE_SPECS[cls.name]
        cls.has_ball, cls.inf_only = spec.has_ball, spec.inf_only
        cls.any_divergence, cls.trains_below = spec.any_divergence, spec.trains_below

    def statistics(self, z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SiFT's (mu, s) per token (B, L, 1) over the hidden dimension; `z` is detached, float32+."""
        mu = z.mean(-1, keepdim=True)
        sigma = self.token_std(z.var(-1, unbiased=False, keepdim=True))
        # Padding never enters a statistic that is used: its delta is 0, and a neutral
        # scale keeps a padded row of zeros from producing 0/0.
        real = mask.unsqueeze(-1)
        return torch.where(real, mu, 0.0), torch.where(real, sigma, 1.0)

    def token_std(self, var: torch.Tensor) -> torch.Tensor:
        """The population std; a constant token gets a tiny one instead of 0."""
        return var.sqrt().clamp_min(TINY)

    def noise(self, shape, device, dtype, knobs: Knobs) -> torch.Tensor:
        """delta_0 before masking: N(0, sigma^2)."""
        return torch.randn(shape, device=device, dtype=dtype) * knobs.adv_noise_std

    def without_ascent(self, delta: torch.Tensor, real: torch.Tensor, knobs: Knobs) -> torch.Tensor:
        """delta_0 as the random-noise control (K = 0) uses it: as drawn."""
        return delta

    def ascent_loss(self, adv_logits: torch.Tensor, target: torch.Tensor, knobs: Knobs) -> torch.Tensor:
        """The loss whose gradient w.r.t. delta the ascent follows (`target` is detached)."""
        raise NotImplementedError

    def step(self, delta: torch.Tensor, g: torch.Tensor, knobs: Knobs) -> torch.Tensor:
        """One ascent step from delta along the gradient g (before padding is zeroed)."""
        raise NotImplementedError

    def final_loss(self, adv_logits: torch.Tensor, clean_logits: torch.Tensor, knobs: Knobs) -> torch.Tensor:
        """R at the final perturbation."""
        raise NotImplementedError


class Projected(PerturbationRule):
    r"""``projected`` (default; the SMART paper's Algorithm 1, Jiang et al. 2020).

    delta_0 ~ N(0, sigma^2); K times: ``g = d ls(f(z + s delta), sg[c]) / d delta``,
    ``delta <- Proj_eps(delta + eta * g / ||g||)`` per token in ``adv_norm`` (a real
    eps-ball); ``R = ls(f(z + s delta), c)`` with gradient into both branches
    (``ls = divergence``). SiFT: ``mu_t, s_t`` = mean and population std of each real token
    over the hidden dimension. K = 0: delta_0 projected onto the ball.
    """

    name = "projected"

    def without_ascent(self, delta, real, knobs):
        return project_onto_ball(delta, knobs.adv_epsilon, knobs.adv_norm)

    def ascent_loss(self, adv_logits, target, knobs):
        return knobs.divergence(adv_logits, target)

    def step(self, delta, g, knobs):
        moved = delta + knobs.adv_step_size * unit_direction(g, knobs.adv_norm)
        return project_onto_ball(moved, knobs.adv_epsilon, knobs.adv_norm)

    def final_loss(self, adv_logits, clean_logits, knobs):
        return knobs.divergence(adv_logits, clean_logits)


class MtDnn(PerturbationRule):
    r"""``mtdnn`` (namisan/mt-dnn ``mt_dnn/perturbation.py`` SmartPerturbation and ``loss.py``).

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
    weights ``p_a``. K = 0: delta_0 scaled to unit norm per token.
    """

    name = "mtdnn"

    def without_ascent(self, delta, real, knobs):
        return guarded_unit(delta, knobs.adv_norm) * real

    def ascent_loss(self, adv_logits, target, knobs):
        return stable_kl(adv_logits, target, mean=False)  # summed over the batch

    def step(self, delta, g, knobs):
        return guarded_unit(delta + knobs.adv_step_size * g, knobs.adv_norm)

    def final_loss(self, adv_logits, clean_logits, knobs):
        return half_detached_sym_kl(adv_logits, clean_logits)


class DeBERTa(PerturbationRule):
    r"""``deberta`` (microsoft/DeBERTa ``DeBERTa/sift/sift.py`` PerturbationLayer, AdversarialLearner).

    delta_0 = clamp(N(0, sigma^2), -2 sigma, 2 sigma); K times (DeBERTa: once):
    ``g = d [sum_b CE(sg[p_c], p_a)] / d delta``, ``delta <- delta + eta * g / (max|g| + 1e-6)``
    per token, no projection. The adversarial branch sees ``sg[z] + sg[s] delta``: R trains
    the layers above the perturbation point, not the embeddings below it. R has the
    gradient of the half-detached symmetric KL of ``mtdnn``; DeBERTa writes it as a symmetric
    cross entropy, whose value adds the two (detached-weight) entropies, so siftkit records
    the symmetric-KL value — the same gradient, a value that is 0 at zero perturbation. SiFT:
    ``s_t = sqrt(var_t + 1e-7)``, a LayerNorm without affine at eps 1e-7 (DeBERTa's, at the
    embedding LayerNorm's input, i.e. ``perturb_at="pre_layernorm"``). K = 0: delta_0 as drawn.
    """

    name = "deberta"

    def token_std(self, var):
        return (var + _DEBERTA_LN_EPS).sqrt()

    def noise(self, shape, device, dtype, knobs):
        sigma = knobs.adv_noise_std
        return super().noise(shape, device, dtype, knobs).clamp(-2 * sigma, 2 * sigma)

    def ascent_loss(self, adv_logits, target, knobs):
        # sum over the batch of CE(sg[p_c], p_a): the part of DeBERTa's symmetric form
        # that depends on delta when the target is detached
        return -(F.softmax(wide(target), -1) * F.log_softmax(wide(adv_logits), -1)).sum()

    def step(self, delta, g, knobs):
        return delta + knobs.adv_step_size * g / (g.abs().amax(-1, keepdim=True) + _GUARD)

    def final_loss(self, adv_logits, clean_logits, knobs):
        return half_detached_sym_kl(adv_logits, clean_logits)


class SeedCode(MtDnn):
    r"""``seed_code`` (the seed paper's notebooks, wangluheng328/SiFT-Project).

    SiFT: ``mu`` and ``s`` per *sentence*: mean and unbiased std over all positions (padding
    included) and features. delta as ``mtdnn``. ``R = stable_kl(c, a)`` with batch mean: the
    gradient reaches the clean branch only (through ``p_c``); it is not a divergence and can
    be negative (recorded as it is). The seed code also took its ascent gradient on the
    normalized tensor fed to the encoder without de-normalization; siftkit takes it at the
    de-normalized point, which is what its final R sees (at the seed's sizes the gradient
    term is negligible next to the noise, so delta is the same random direction).
    """

    name = "seed_code"

    def statistics(self, z, mask):
        """Per sentence (B, 1, 1) over all positions and features, padding included, unbiased."""
        flat = z.flatten(1)
        return flat.mean(1).view(-1, 1, 1), flat.std(1).clamp_min(TINY).view(-1, 1, 1)

    def final_loss(self, adv_logits, clean_logits, knobs):
        return stable_kl(clean_logits, adv_logits, mean=True)


RULES: dict[str, type[PerturbationRule]] = {rule.name: rule for rule in (Projected, MtDnn, DeBERTa, SeedCode)}


def rule_named(name: str) -> type[PerturbationRule]:
    """The rule class registered under `name`; a ValueError naming the choices otherwise."""
    return RULES[rule_spec(name).name]
