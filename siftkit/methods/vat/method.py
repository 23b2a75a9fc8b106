r"""Virtual adversarial training (Miyato, Dai & Goodfellow, "Adversarial Training Methods for
Semi-Supervised Text Classification", ICLR 2017), as tensorflow/models
research/adversarial_text/adversarial_losses.py (``virtual_adversarial_loss``) does it, on the
embeddings at ``perturb_at`` (default the word-embedding lookup W[ids]):

    c  = f(e).detach()                                   the clean logits, a fixed target
    d  ~ N(0, I)                                         shape of e (B, L, H)
    repeat num_power_iteration times:
        d = xi * unit(d * m')                            m': real tokens but each example's last
        g = d KL(p_c || p(. | e + d)) / d d              (the input gradient only)
        d = g
    delta = perturb_norm_length * unit(g * m)            m: real tokens
    loss  = CE(f(e)) + adv_reg_coeff * KL(p_c || p(. | e + delta))

``unit(x)`` scales each example's whole (L, H) block to unit L2 norm, as the official
``_scale_l2``: ``x / (a * sqrt(sum((x / a)^2) + 1e-6))`` with ``a = max|x| + 1e-12`` per example
(dividing by the max first keeps the norm finite for tiny gradients). xi is
``small_constant_for_finite_diff``.

Where the kit follows the official code, and where it cannot:

- The clean side is detached everywhere (the KL's first argument); the adversarial forward
  starts from e itself, so it trains the embedding table as well as what lies above.
- The official mask (``_mask_by_length(length - 1)``) keeps the random start and the probes off
  each sequence's last token (its LSTM classifier reads the state there); the final perturbation
  is not masked, but its gradient is zero past the sequence. The kit masks the probes the same
  way (last real token, [SEP]/</s> here) and the final perturbation to the real tokens (HF
  encoders give padding a zero gradient too; the mask makes it exact).
- The official code computes the VAT term on a separate batch (its unlabeled+labeled
  ``lm_inputs``) with its own clean forward; the kit has no unlabeled data and uses the training
  batch, reusing its clean forward's logits (one forward fewer).
- Its embeddings are first normalized by vocabulary frequency (layers.py ``Embedding._normalize``:
  each dimension to frequency-weighted zero mean, unit variance), so ``perturb_norm_length=5``
  is a size in those units. The kit perturbs the model's own embeddings as they are; measure
  ``relative_perturbation`` to compare sizes across models.
- For two classes its KL is a sigmoid's (one logit); the kit's 2-logit softmax KL is the same
  divergence.
- If a power-iteration gradient is not finite, the VAT term is skipped for that batch and counted
  (``skipped``), as for SMART and SiFT.

Cost per batch (num_power_iteration = K): 2 + K forwards, K input-gradient backwards, 1
backward through the clean and the adversarial forwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from siftkit.core.divergences import kl
from siftkit.methods.embedding_perturbation import EmbeddingPerturbationMethod, work_dtype

_MAX_GUARD = 1e-12  # the official _scale_l2's guard on max|x| (a zero block stays zero)
_SUM_GUARD = 1e-6  # ... and on the sum of squares of x / max|x|


def scale_l2(x: torch.Tensor, norm_length: float) -> torch.Tensor:
    """Each example's block x[i] (all positions and features) rescaled to L2 norm `norm_length`."""
    peak = x.abs().amax(dim=(1, 2), keepdim=True) + _MAX_GUARD
    relative = x / peak  # in [-1, 1]: its squares cannot underflow or overflow
    return norm_length * relative / torch.sqrt(relative.pow(2).sum(dim=(1, 2), keepdim=True) + _SUM_GUARD)


def probe_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real tokens except each example's last real one (the official ``length - 1`` mask)."""
    real = attention_mask.to(torch.bool)
    positions = torch.arange(real.shape[1], device=real.device)
    last = torch.where(real, positions, -1).amax(dim=1, keepdim=True)  # -1 for an empty row
    return real & (positions != last)


class VATMethod(EmbeddingPerturbationMethod):
    """Virtual adversarial training (module docstring)."""

    name = "vat"
    logged_parts = EmbeddingPerturbationMethod.logged_parts + ("ascent_cosine",)

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.last_perturbation: torch.Tensor | None = None
        self.last_gradient: torch.Tensor | None = None

    def direction(self, batch: Mapping[str, Any], target: torch.Tensor, z: torch.Tensor):
        """(the perturbation delta, the last power-iteration gradient g), or None where g is not
        finite. `target`: the clean logits, detached; `z`: the clean tensor at the point."""
        s = self.settings
        dtype = work_dtype(z)
        z_fixed = z.detach().to(dtype)
        real = batch["attention_mask"].to(z.device)
        probes = probe_mask(real).unsqueeze(-1).to(dtype)
        d = torch.randn(z.shape, device=z.device, dtype=dtype)
        g = None
        with torch.enable_grad():  # the power iteration needs autograd even under no_grad
            for _ in range(s.num_power_iteration):
                d = scale_l2(d * probes, s.small_constant_for_finite_diff).requires_grad_(True)
                probe_logits = self.split.forward_from((z_fixed + d).to(z.dtype), batch, self.perturb_at)
                (g,) = torch.autograd.grad(kl(target, probe_logits), d)
                if not bool(torch.isfinite(g).all()):
                    return None
                d = g
        delta = scale_l2(g * real.unsqueeze(-1).to(dtype), s.perturb_norm_length)
        return delta.detach(), g.detach()

    def loss(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.settings
        logits, z = self.clean_forward(model, batch)
        task = self.task_loss(logits, batch["labels"])
        target = logits.detach()
        mask = batch["attention_mask"].to(z.device)
        found = self.direction(batch, target, z)
        if found is None:
            self.skipped += 1
            self.last_perturbation = self.last_gradient = None
            nan = float("nan")
            return task, {"task_loss": float(task.detach()), **dict.fromkeys(self.logged_parts, nan)}
        delta, g = found
        adv_logits = self.split.forward_from((z.to(delta.dtype) + delta).to(z.dtype), batch, self.perturb_at)
        divergence = kl(target, adv_logits)
        reg = s.adv_reg_coeff * divergence
        self.last_perturbation, self.last_gradient = delta, g
        # g is often ~1e-9 per token: torch's cosine clamps products of norms below 1e-8, so the
        # gradient is compared at a unit scale per example (a positive factor keeps every cosine).
        g_unit = g / g.abs().amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
        parts = {
            "task_loss": float(task.detach()),
            "adv_loss": float(divergence.detach()),
            "reg_loss": float(reg.detach()),
            **self.record_push(z, delta, mask, g_unit),
        }
        return task + reg, parts
