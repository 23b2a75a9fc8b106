r"""The word-embedding attack of FreeLB, PGD-K and FreeAT: one module, the rule of their code.

All three come from zhuchen03/FreeLB and share its rule; each method's file says how it uses
it. Notation: ``e = W[ids]`` the word-embedding lookup (what the codes feed as
``inputs_embeds``; the kit's ``perturb_at='word_embeddings'``), ``m`` the attention mask,
``L_i = sum_t m_it`` the real tokens of example i, ``d`` the embedding width, ``delta`` the
perturbation, shape (B, L, d), kept in float32 whatever the model's precision.

- Start (`initial_delta`): with ``adv_init_mag > 0``, l2: ``delta = U(-1, 1) * m *
  adv_init_mag / sqrt(L_i * d)`` per example (its expected whole-sequence l2 norm is then
  ``adv_init_mag / sqrt(3)``); linf: ``delta = U(-adv_init_mag, adv_init_mag) * m``;
  else ``delta = 0`` (nothing drawn).
- Step (`ascent_step`): ``delta <- delta + adv_lr * g / max(||g_i||, 1e-8)`` where ``||g_i||``
  is the norm of example i's gradient over the WHOLE sequence (all L*d entries at once: the
  l2 norm, or the largest |entry| for linf), not per token.
- Ball (`project`): ``adv_max_norm > 0``: l2: examples with ``||delta_i||_2 > adv_max_norm``
  are rescaled onto that norm; linf: every entry is clamped to ``[-adv_max_norm,
  adv_max_norm]``; ``adv_max_norm = 0``: no ball.

Where the kit is stricter than the code (never where the code is well defined):
- the gradient is multiplied by ``m`` before the step, so padding never moves. With an
  attention mask, padded positions get exactly zero gradient in every model the kit runs, so
  this changes nothing there; it keeps a model that leaks gradient to padding from
  perturbing it (DESIGN.md trap 4);
- the fairseq code (PGD, FreeAT) divides by the raw gradient norm (NaN for an all-zero
  gradient); the kit clamps at 1e-8 everywhere, as the code's FreeLB does;
- the l2 ball leaves an example with ``||delta_i|| = 0`` as it is (the code's
  ``adv_max_norm / 0 * 0`` is NaN there).

The perturbed forward runs the model's own code with the word-embedding output replaced by
``W[ids] + delta`` (`siftkit.core.split.EmbeddingSplit.forward_from`), so position and type
embeddings and the LayerNorm come after it, once, as with ``inputs_embeds``; the lookup is
part of the graph, so the embedding table trains through the perturbed loss, as in the code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from siftkit.core.split import EmbeddingSplit, UnsupportedModelError, unwrap
from siftkit.methods.base import Method

POINT = "word_embeddings"
_MIN_GRAD_NORM = 1e-8  # run_glue_freelb.py: torch.clamp(denorm, min=1e-8)
_PLAIN_PARTS = ("perturbation_norm", "relative_perturbation")


def initial_delta(z: torch.Tensor, mask: torch.Tensor, init_mag: float, norm_type: str) -> torch.Tensor:
    """The random start: `z` (B, L, d) the word embeddings (only its shape and device are used),
    `mask` (B, L) the real tokens. float32; padding is exactly 0."""
    shape = z.shape
    if init_mag <= 0:
        return torch.zeros(shape, dtype=torch.float32, device=z.device)
    real = mask.to(device=z.device, dtype=torch.float32).unsqueeze(-1)
    if norm_type == "l2":
        delta = torch.empty(shape, dtype=torch.float32, device=z.device).uniform_(-1, 1) * real
        # Scaled per example by its real size L_i * d, so that the start's whole-sequence norm
        # does not grow with the length of the sentence.
        dims = real.sum(dim=(1, 2)) * shape[-1]
        return delta * (init_mag / torch.sqrt(dims)).view(-1, 1, 1)
    if norm_type == "linf":
        return torch.empty(shape, dtype=torch.float32, device=z.device).uniform_(-init_mag, init_mag) * real
    raise ValueError(f"adv_norm_type must be 'l2' or 'linf', got {norm_type!r}")


def sequence_norm(x: torch.Tensor, norm_type: str) -> torch.Tensor:
    """Each example's norm over all its entries (B,): l2, or the largest |entry| for linf."""
    flat = x.reshape(x.shape[0], -1)
    return flat.norm(p=2 if norm_type == "l2" else float("inf"), dim=1)


def ascent_step(
    delta: torch.Tensor, grad: torch.Tensor, adv_lr: float, norm_type: str, mask: torch.Tensor
) -> torch.Tensor:
    """``delta + adv_lr * g / max(||g_i||, 1e-8)``, ``||g_i||`` over the whole example."""
    g = grad.detach().to(delta.dtype) * mask.to(delta.dtype).unsqueeze(-1)
    denorm = sequence_norm(g, norm_type).clamp_min(_MIN_GRAD_NORM).view(-1, 1, 1)
    return (delta.detach() + adv_lr * g / denorm).detach()


def project(delta: torch.Tensor, max_norm: float, norm_type: str) -> torch.Tensor:
    """The ball of radius `max_norm` (0: none): l2 rescales each example over it, linf clamps."""
    if max_norm <= 0:
        return delta
    if norm_type == "linf":
        return delta.clamp(-max_norm, max_norm)
    norm = sequence_norm(delta.float(), "l2")
    over = norm > max_norm
    scale = torch.where(over, max_norm / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.ones_like(norm))
    return delta * scale.view(-1, 1, 1).to(delta.dtype)


class RngReplay:
    """The random state at one moment, to start several forwards from it.

    FreeLB's patched models and the fairseq code keep one set of dropout masks for all the
    forwards of a batch's ascent (``dp_masks``; fairseq's ``--no-sync-dp`` off). Restoring
    the generators before each forward draws the same masks in any model, without patching
    it: every dropout layer draws in the same order with the same shapes.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.accel = None
        if device.type == "cuda":
            self.accel = torch.cuda.get_rng_state(device)
        elif device.type == "mps":
            self.accel = torch.mps.get_rng_state()

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(self.accel, self.device)
        elif self.device.type == "mps":
            torch.mps.set_rng_state(self.accel)


def attack_split(model, algo: str) -> EmbeddingSplit:
    """The model's split at its word embeddings; a model without them is refused by name."""
    try:
        split = EmbeddingSplit(model)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(
            f"algo={algo!r} perturbs the word embeddings (perturb_at='word_embeddings'), "
            f"which this model does not have: {exc}"
        ) from None
    return split


class EmbeddingAttackMethod(Method):
    """What FreeLB, PGD and FreeAT share: their settings, the split at the word embeddings,
    the perturbed forward, and the logged size of the push."""

    perturbs_input = True

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.settings = cfg.settings
        self.norm_type = self.settings.adv_norm_type
        # The bare model's split (PGD's ascent forwards, which must not go through DDP: they
        # back-propagate into delta only), and one on the model as passed (DDP's forward must
        # run before a backward into the parameters).
        self.split = attack_split(unwrap(model), cfg.algo)
        self._wrapped_split: EmbeddingSplit | None = None

    def split_for(self, model) -> EmbeddingSplit:
        if model is self.split.model:
            return self.split
        if self._wrapped_split is None or self._wrapped_split.model is not model:
            if unwrap(model) is not self.split.model:
                raise ValueError("this method was built for another model")
            self._wrapped_split = EmbeddingSplit(model)
        return self._wrapped_split

    def plain_parts(self, task: torch.Tensor) -> dict[str, float]:
        # The same columns in the stages the method leaves out (adv_stages) as plain's batch logs
        # beside them, so that a run's history has one shape.
        return {"task_loss": float(task.detach()), **dict.fromkeys(_PLAIN_PARTS, 0.0)}

    # --- the pieces of an ascent ----------------------------------------------------------
    @staticmethod
    def real_tokens(batch: Mapping[str, Any]) -> torch.Tensor:
        mask = batch.get("attention_mask")
        return mask if mask is not None else torch.ones_like(batch["input_ids"])

    def word_embeddings(self, split: EmbeddingSplit, batch: Mapping[str, Any]) -> torch.Tensor:
        """``W[ids]``, in the graph (the table gets the gradient of every loss on it)."""
        return split.word_embeddings(batch["input_ids"])

    def perturbed_logits(
        self, split: EmbeddingSplit, batch: Mapping[str, Any], z: torch.Tensor, delta: torch.Tensor
    ) -> torch.Tensor:
        """The model's logits with ``W[ids]`` replaced by ``z + delta``."""
        return split.forward_from(z + delta, batch, POINT)

    def start(self, z: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        s = self.settings
        return initial_delta(z, self.real_tokens(batch), s.adv_init_mag, self.norm_type)

    def step(self, delta: torch.Tensor, grad: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """One ascent step and the ball."""
        s = self.settings
        moved = ascent_step(delta, grad, s.adv_lr, self.norm_type, self.real_tokens(batch))
        return project(moved, s.adv_max_norm, self.norm_type)

    def size_parts(
        self, z: torch.Tensor, delta: torch.Tensor, batch: Mapping[str, Any], grad: torch.Tensor | None
    ) -> dict[str, float]:
        """The logged size of `delta` at the word embeddings `z`, and its cosine with the ascent
        gradient `grad` that made its last step (NaN where no step was taken: one column shape)."""
        stats = self.record_push(z, delta, self.real_tokens(batch).to(z.device), grad)
        stats.setdefault("ascent_cosine", math.nan)
        return stats
