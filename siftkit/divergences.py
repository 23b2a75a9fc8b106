"""Divergences between two classifiers' output distributions, chosen by name.

Every function takes two logit tensors of shape (B, C), works in float32 from log-softmax
(stable under bf16/fp16 autocast), returns the mean over the batch of a per-example
divergence, and lets gradient flow into *both* arguments: SMART's and SiFT's regularizer
trains the clean branch as well as the perturbed one. Detach an argument at the call site
when a fixed target is wanted (the ascent step does).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Divergence = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits.float(), dim=-1)


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) = sum_c p_c (log p_c - log q_c), averaged over the batch."""
    log_p, log_q = _log_probs(p_logits), _log_probs(q_logits)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) + KL(Q || P) = sum_c (p_c - q_c)(log p_c - log q_c); SMART's l_s."""
    log_p, log_q = _log_probs(p_logits), _log_probs(q_logits)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()


def js(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence: (KL(P || M) + KL(Q || M)) / 2 with M = (P + Q) / 2."""
    log_p, log_q = _log_probs(p_logits), _log_probs(q_logits)
    # log M computed as logsumexp of the two log-probabilities: no log(0) for tiny p or q.
    log_m = torch.logaddexp(log_p, log_q) - torch.log(torch.tensor(2.0, device=log_p.device))
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).mean()


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
