r"""R3F and R4F (Aghajanyan et al., "Better Fine-Tuning by Reducing Representational Collapse",
ICLR 2021), as fairseq's criterion ``sentence_prediction_r3f`` does it
(examples/rxf/rxf_src/sentence_prediction_r3f.py):

    e      = W[ids]                             the token-embedding lookup (``perturb_at``)
    noise  ~ U(-eps, eps)  or  N(0, eps^2)      at every position (the code has no padding mask)
    loss   = CE(f(e)) + r3f_lambda * symKL(f(e.detach() + noise), f(e))

- The noise goes on a *detached* copy of the lookup, so the noised branch trains everything
  above the lookup and not the embedding table; the clean branch trains it all.
- ``symKL(a, b) = KL(p_a || p_b) + KL(p_b || p_a)`` from float32 (log-)softmax, gradient into
  both branches. fairseq sums it over the batch and divides by the batch size (``F.kl_div(...,
  "sum") / B``), multiplies by the sample size B and adds it to the *summed* cross-entropy; its
  optimizer divides the gradient by the sample size. Per batch that is ``mean CE + r3f_lambda *
  mean symKL``, which is what the kit computes (means over the batch).
- Both forwards are training forwards (independent dropout), as in fairseq; no ascent.
- ``mask_padding=True`` puts the noise on real tokens only (not the official code's choice).

R4F is ``spectral_norm_classification_head=True``: the head's output layer (fairseq's ``out_proj``;
``spectral_norm_layers="all"``: every Linear of the head) computes with ``W / sigma(W)``
(`siftkit.core.spectral_norm`). The normalization is part of the method, so it follows
``adv_stages``: the head is normalized in the stages where R3F acts and plain (the normalized
weight baked in, the function unchanged) where it does not, so those stages are exactly plain's.
The loop normalizes the head on the bare model before DDP wraps it (`prepare_model`).

Cost per batch: 2 forwards, 1 backward through both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from siftkit.core import spectral_norm
from siftkit.core.divergences import symmetric_kl
from siftkit.core.split import unwrap
from siftkit.methods.embedding_perturbation import EmbeddingPerturbationMethod, work_dtype


def r3f_noise(like: torch.Tensor, eps: float, noise_type: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Noise of `like`'s shape in float32 at least: U(-eps, eps) or N(0, eps^2) per entry,
    zero where `mask` (B, L) is 0 when a mask is given (fairseq's code passes none)."""
    dtype = work_dtype(like)
    if noise_type == "uniform":
        noise = (torch.rand(like.shape, device=like.device, dtype=dtype) * 2 - 1) * eps
    elif noise_type == "normal":
        noise = torch.randn(like.shape, device=like.device, dtype=dtype) * eps
    else:
        raise ValueError(f"noise_type must be 'uniform' or 'normal' for algo='r3f'; got {noise_type!r}")
    if mask is not None:
        noise = noise * mask.to(device=like.device, dtype=dtype).unsqueeze(-1)
    return noise


def _check_not_wrapped_yet(model, cfg, head: dict) -> None:
    """R4F must normalize the head before DDP wraps the model (`spectral_norm.normalize`): refuse
    a data-parallel run in which it would have to do so later."""
    if unwrap(model) is model or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    processes = torch.distributed.get_world_size()
    if processes > 1 and cfg.adv_stages == "last":
        raise ValueError(
            f"spectral_norm_classification_head=True with adv_stages='last' on {processes} processes: "
            f"the head would be normalized at the last stage's start, after DDP wrapped the model, and "
            f"DDP would no longer average its gradient; use adv_stages='all' or 'first', or one process"
        )
    late = [name for name, layer in head.items() if not spectral_norm.is_normalized(layer)]
    if processes > 1 and late:
        raise ValueError(
            f"spectral_norm_classification_head=True: the head ({', '.join(late)}) must be normalized "
            f"before DDP wraps the model: call siftkit.methods.method_class('r3f').prepare_model(model, "
            f"cfg) on the bare model before wrapping it (the kit's training loop does)"
        )


class R3FMethod(EmbeddingPerturbationMethod):
    """R3F, and R4F with ``spectral_norm_classification_head=True`` (module docstring)."""

    name = "r3f"

    @classmethod
    def prepare_model(cls, model, cfg) -> None:
        # R4F normalizes the head before DDP wraps the model (spectral_norm.normalize says why)
        # and before any optimizer is built, unless the first stage runs without the method
        # (adv_stages="last"): that stage must be plain's.
        if cfg.settings.spectral_norm_classification_head and cfg.adv_stages != "last":
            for layer in spectral_norm.head_linears(model, cfg.settings.spectral_norm_layers).values():
                if not spectral_norm.is_normalized(layer):
                    spectral_norm.normalize(layer)

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        s = self.settings
        self.head: dict[str, torch.nn.Linear] = (
            spectral_norm.head_linears(model, s.spectral_norm_layers) if s.spectral_norm_classification_head else {}
        )
        if self.head:
            _check_not_wrapped_yet(model, cfg, self.head)
        for layer in self.head.values():
            # A checkpoint, a cached stage or an early-stopping snapshot holds the head in the
            # form it had then; loading it puts the layer in that form.
            spectral_norm.follow_state_dicts(layer)
        # Where no loop called prepare_model (AdversarialTrainer, AdversarialLoss): now.
        self.prepare_model(model, cfg)
        self.last_perturbation: torch.Tensor | None = None

    def _normalize_head(self, on: bool) -> None:
        for layer in self.head.values():
            if on and not spectral_norm.is_normalized(layer):
                spectral_norm.normalize(layer)
            elif not on and spectral_norm.is_normalized(layer):
                spectral_norm.bake(layer)

    def start_stage(self, model, *, stage_index: int, fresh_head: bool, active_before: bool) -> None:
        self._normalize_head(self.active)
        if fresh_head:
            # reinit_head drew new raw weights; the stored vectors belong to the old ones.
            for layer in self.head.values():
                if spectral_norm.is_normalized(layer):
                    spectral_norm.refresh(layer)

    def loss(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.settings
        logits, z = self.clean_forward(model, batch)
        task = self.task_loss(logits, batch["labels"])
        mask = batch["attention_mask"].to(z.device)
        noise = r3f_noise(z, s.eps, s.noise_type, mask if s.mask_padding else None)
        noised = (z.detach().to(noise.dtype) + noise).to(z.dtype)
        noised_logits = self.split.forward_from(noised, batch, self.perturb_at)
        divergence = symmetric_kl(noised_logits, logits)
        reg = s.r3f_lambda * divergence
        self.last_perturbation = noise.detach()
        parts = {
            "task_loss": float(task.detach()),
            "adv_loss": float(divergence.detach()),
            "reg_loss": float(reg.detach()),
            **self.record_push(z, noise, mask),
        }
        return task + reg, parts
