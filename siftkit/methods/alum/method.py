r"""ALUM's training loss (Liu et al. 2020, "Adversarial Training for Large Neural Language Models").

What namisan/mt-dnn's ``alum/adv_masked_lm.py`` (`AdvMaskedLmLoss.forward`, the version after
commit f0b40b6, "fix") does, applied to a classifier's logits. Notation: ``z`` the tensor at
``perturb_at`` from the clean forward (ALUM's code: fairseq's ``inner_states[0]``, the embedding
block's output after LayerNorm and dropout, i.e. ``embedding_output``), ``c`` the clean logits,
``sg[.]`` stop-gradient, ``p_c``, ``p_a`` the clean and adversarial class distributions:

1. ``delta_0 = noise_var * N(0, I)`` (``noise_var`` is a standard deviation);
2. ``g = d KL(sg[p_c] || p_a(sg[z] + delta_0)) / d delta_0``, the KL averaged over the batch
   (the code's ``reduction="batchmean"``); a non-finite ``g`` skips the term for the batch;
3. ``u = delta_0 + alum_step_size * g`` (the raw gradient, not a normalized one), then
   ``delta = u / (||u||_t + noise_gamma)`` per token (``project_norm_type``: ``inf`` max |.|,
   ``l2``; ``l1`` is the code's ``sign(u)``). This normalizes delta, so every token's push has
   unit size whatever ``noise_var`` and the step: at the defaults the gradient term is far
   below the noise and delta is the noise's direction;
4. ``R = KL(sg[p_c] || p_a) + KL(sg[p_a] || p_c)`` at ``sg[z] + delta``: each KL's first
   argument detached (the code passes ``logits.detach()`` and ``adv_logits.detach()`` as
   targets), and the adversarial input detached too (``embed.data.detach() + noise``, then
   ``.detach()``), so R trains the layers above the perturbation point through the
   adversarial branch and the whole model through the clean one;
5. loss ``= CE + adv_alpha * R``.

The code sums its MLM cross-entropy and R over the masked tokens and fairseq divides both by
their number; for a classifier that is CE and R as batch means, which is what is used here.

Where the kit differs from the code: the noise is zero at padding positions (the code draws it
everywhere; a padded position is masked out of attention, so its noise never reaches a real
token's output and the loss is the same). The code fixes one ascent step (the paper's K = 1).

Earlier versions of the code differ: v0.1 (commit 4b92661) added ``step * g / max|g|`` to the
embedding without the noise; commit 27c4450 normalized ``embed + step * g`` (the whole
embedding) and was replaced three days later by the rule above (mt-dnn issue #184).

``alum_projection="paper"``: the paper's Algorithm 1, line 6, ``delta <- Proj(delta + eta g)``
onto the ball ``||delta|| <= alum_epsilon`` per token (clamped to +-epsilon for ``inf``), with the
code's loss forms otherwise.

Cost per batch: 3 forwards (clean, ascent, adversarial), 1 input-gradient backward through the
layers above the point, 1 backward through both branches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from siftkit.core.divergences import kl
from siftkit.core.regularizers import input_gradient
from siftkit.core.rules import half_detached_sym_kl, project_onto_ball, token_norm
from siftkit.core.split import EmbeddingSplit, UnsupportedModelError, unwrap
from siftkit.methods.base import Method

_STATS = ("perturbation_norm", "relative_perturbation", "ascent_cosine")


class Alum(Method):
    """ALUM: ``CE + adv_alpha * R`` with R as namisan/mt-dnn ``alum/adv_masked_lm.py`` computes it."""

    name = "alum"
    perturbs_input = True

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.settings = cfg.settings
        self.perturb_at = cfg.perturb_at
        try:
            # The adversarial forwards run on the bare module; only the clean forward goes through
            # `model` as the loop passes it (under DDP every process must run the same collectives).
            self.split = EmbeddingSplit(unwrap(model))
            self.split.module_at(self.perturb_at)  # the point must exist: say so before training
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(
                f"algo='alum' perturbs the model's embeddings at "
                f"perturb_at={self.perturb_at!r}, which it cannot reach: {exc}"
            ) from None
        self._wrapped_split: EmbeddingSplit | None = None
        # After each batch with the term: the initial noise, the final push (raw units at the
        # point), the ascent gradient.
        self.last_noise: torch.Tensor | None = None
        self.last_perturbation: torch.Tensor | None = None
        self.last_gradient: torch.Tensor | None = None

    def plain_parts(self, task: torch.Tensor) -> dict[str, float]:
        # One history shape whether or not the term runs (stages that adv_stages leaves out).
        return {
            "task_loss": float(task.detach()),
            "adv_loss": 0.0,
            "reg_loss": 0.0,
            "perturbation_norm": 0.0,
            "relative_perturbation": 0.0,
            "ascent_cosine": float("nan"),
        }

    def loss(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        logits, z = self._clean_split(model).forward_capture(batch, self.perturb_at)
        task = self.task_loss(logits, batch["labels"])
        parts = self.plain_parts(task)
        # The ascent needs autograd even where the loss is only measured (a notebook's no_grad).
        with torch.enable_grad():
            term = self.adversarial_term(batch, logits, z)
        if term is None:
            parts.update(dict.fromkeys(_STATS, float("nan")))
            return task, parts
        r, stats = term
        weighted = self.settings.adv_alpha * r
        parts.update(adv_loss=float(r.detach()), reg_loss=float(weighted.detach()), **stats)
        return task + weighted, parts

    def adversarial_term(self, batch: Mapping[str, Any], clean_logits: torch.Tensor, z: torch.Tensor):
        """(R, its measured size) for the batch, or None where the ascent gradient is not finite."""
        s, at = self.settings, self.perturb_at
        mask = batch["attention_mask"].to(device=z.device, dtype=torch.bool)
        # delta and its arithmetic in float32 at least (an fp16 step below the format's
        # resolution would be lost); a float64 model keeps float64.
        work = torch.promote_types(z.dtype, torch.float32)
        real = mask.unsqueeze(-1).to(work)
        base = z.detach().to(work)  # the code's embed.data.detach(): R does not reach below the point
        noise = (torch.randn(z.shape, device=z.device, dtype=work) * s.noise_var * real).requires_grad_(True)
        adv_logits = self.split.forward_from((base + noise).to(z.dtype), batch, at)
        g = input_gradient(kl(clean_logits.detach(), adv_logits), noise)  # KL(sg[p_c] || p_a), batch mean
        if not bool(torch.isfinite(g).all()):
            self.skipped += 1
            self.last_noise = self.last_perturbation = self.last_gradient = None
            return None
        delta = (self.step(noise.detach(), g) * real).detach()
        adv_logits = self.split.forward_from((base + delta).to(z.dtype), batch, at)
        r = half_detached_sym_kl(adv_logits, clean_logits)
        self.last_noise, self.last_perturbation, self.last_gradient = noise.detach(), delta, g.detach()
        return r, self.record_push(z, delta, mask, g)

    def step(self, noise: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """delta from the initial noise and the ascent gradient (module docstring, step 3)."""
        s = self.settings
        u = noise + s.alum_step_size * g
        if s.alum_projection == "paper":
            return project_onto_ball(u, s.alum_epsilon, s.project_norm_type)
        if s.project_norm_type == "l1":
            return u.sign()
        return u / (token_norm(u, s.project_norm_type) + s.noise_gamma)

    def _clean_split(self, model) -> EmbeddingSplit:
        """The split whose forward goes through `model` as passed (a DDP wrapper, or the bare module)."""
        if model is self.split.model:
            return self.split
        if unwrap(model) is not self.split.model:
            raise ValueError("this method was built for another model")
        if self._wrapped_split is None or self._wrapped_split.model is not model:
            self._wrapped_split = EmbeddingSplit(model)
        return self._wrapped_split
