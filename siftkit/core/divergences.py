"""Divergences between two classifiers' output distributions, chosen by name.

Every function takes two logit tensors of shape (B, C), works from log-softmax in float32
(float64 for a float64 model; stable under bf16/fp16 autocast), returns the mean over the batch of a per-example
divergence, and lets gradient flow into *both* arguments: SMART's and SiFT's regularizer
trains the clean branch as well as the perturbed one. Detach an argument at the call site
when a fixed target is wanted (the ascent step does).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Divergence = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits are widened to float32; float32 and float64 are kept."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(at_least_float32(logits), dim=-1)


# Near the clean point (where SMART and SiFT work) the two distributions differ by ~1e-4, and
# the textbook sums sum p (log p - log q) cancel first-order terms in float32: the result is
# rounding noise and can be negative. Written term by term as p * phi(ratio) with phi >= 0
# (expm1 / log1p), every term is second order and non-negative, and exactly 0 at P = Q.
_BIG = 30.0  # past this log-ratio expm1 would overflow; the large-ratio branch is exact there


def _kl_terms(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-class terms of KL(P || Q): p (r - 1 - log r) with r = q / p (they sum to KL)."""
    p, t = log_p.exp(), log_q - log_p
    small = p * (torch.expm1(t.clamp(max=_BIG)) - t)
    large = (log_q.exp() - p) - p * t
    return torch.where(t < _BIG, small, large)


def _kl_to_mid_terms(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-class terms of KL(P || M), M = (P + Q) / 2: p (u - log(1 + u)), u = (q / p - 1) / 2."""
    p, t = log_p.exp(), log_q - log_p
    u = torch.expm1(t.clamp(max=_BIG)) / 2
    small = p * (u - torch.log1p(u))
    large = 0.5 * (log_q.exp() - p) - p * (t - math.log(2.0))
    return torch.where(t < _BIG, small, large)


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) = sum_c p_c (log p_c - log q_c), averaged over the batch."""
    return _kl_terms(_log_probs(p_logits), _log_probs(q_logits)).sum(-1).mean()


def symmetric_kl_per_example(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) + KL(Q || P) of each example, shape (B,)."""
    log_p, log_q = _log_probs(p_logits), _log_probs(q_logits)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) + KL(Q || P) = sum_c (p_c - q_c)(log p_c - log q_c); SMART's l_s."""
    return symmetric_kl_per_example(p_logits, q_logits).mean()


def js(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence: (KL(P || M) + KL(Q || M)) / 2 with M = (P + Q) / 2."""
    log_p, log_q = _log_probs(p_logits), _log_probs(q_logits)
    terms = _kl_to_mid_terms(log_p, log_q) + _kl_to_mid_terms(log_q, log_p)
    return (0.5 * terms.sum(-1)).mean()


def mse(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Squared distance between the two probability vectors, summed over classes."""
    p, q = _log_probs(p_logits).exp(), _log_probs(q_logits).exp()
    return (p - q).pow(2).sum(-1).mean()


DIVERGENCES: dict[str, Divergence] = {"sym_kl": symmetric_kl, "kl": kl, "js": js, "mse": mse}


def get_divergence(name: str) -> Divergence:
    try:
        return DIVERGENCES[name]
    except KeyError:
        raise ValueError(f"divergence must be one of {', '.join(map(repr, DIVERGENCES))}; got {name!r}") from None
