"""The training loop's contract with a method: what one training batch does.

The loop (`siftkit.run.training`, or `siftkit.AdversarialTrainer` inside `transformers.Trainer`)
hands a method each batch with a `BatchContext` and the method runs its own forwards and
backwards: most methods build one loss and call ``ctx.backward(loss)`` then ``ctx.update()``
once (`Method.train_batch`'s default, from `Method.loss`), FreeLB back-propagates K losses into
one update, FreeAT replays the batch with an update each time. The loop owns everything around
that: the optimizer and its schedule, gradient clipping, mixed precision, the non-finite guard,
logging and checkpoints.

Shared by every method: the task loss (cross-entropy in float32 with ``label_smoothing``), the
L2-SP pull towards the pre-trained weights (``l2sp_weight``, added once per batch), and
``active``: False in the stages that ``adv_stages`` leaves out, where a batch is plain
fine-tuning's, exactly (one forward, the same draws, the same logged parts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from siftkit.core.l2sp import L2SP
from siftkit.core.perturbation_specs import TINY
from siftkit.core.split import model_inputs


@dataclass
class Push:
    """One batch's push at the perturbed point: the clean tensor `z` (B, L, H), the raw
    perturbation added to it, and the real tokens (B, L)."""

    z: torch.Tensor
    perturbation: torch.Tensor
    mask: torch.Tensor


class BatchContext(Protocol):
    """What the loop lends a method for one batch."""

    def autocast(self) -> AbstractContextManager:
        """Mixed precision around forwards, as the run is set up."""

    def backward(self, loss: torch.Tensor) -> bool:
        """Back-propagate `loss` into the parameters' gradients (they accumulate until `update`).
        False, with nothing back-propagated, where the loss is not finite (on any process): the
        batch's next update is then dropped and counted."""

    def update(self) -> bool:
        """One optimizer update from the accumulated gradients: clip, step (dropped where the loss or
        the gradient norm was not finite), advance the schedule, zero the gradients. True if applied."""


class Method:
    """One training method. Subclasses set `name` and implement `loss` (one backward per batch)
    or override `train_batch` (methods that own several backwards or updates per batch).

    `parts` (a dict of floats per batch) reach the run's history: every method logs
    ``task_loss``; methods with a regularizer term also ``adv_loss`` (the term before its weight)
    and ``reg_loss`` (the term as it enters the loss); methods that perturb an input also
    ``perturbation_norm`` and ``relative_perturbation`` (per real token, ‖Δ_t‖ and ‖Δ_t‖/‖z_t‖ at
    the perturbed point) and, where they ascend, ``ascent_cosine``.
    """

    name: str = ""
    perturbs_input: bool = False  # whether the method pushes an input (its size is measured)
    updates_per_batch: int = 1  # optimizer updates per batch (FreeAT: K); the loop sizes the stage by it

    def __init__(self, model, cfg):
        self.cfg = cfg
        self.label_smoothing = cfg.label_smoothing
        # theta_0 is the model as it is now: built before any training, the pre-trained weights.
        self.l2sp: L2SP | None = L2SP(model) if cfg.l2sp_weight > 0 else None
        self.l2sp_weight = cfg.l2sp_weight
        self.active = True
        self.skipped = 0  # batches whose regularizer was skipped for a non-finite input gradient
        self.last_push: Push | None = None  # the last batch's push, for figures (00_tour's panel)

    # --- the pieces every method shares ---------------------------------------------------
    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def with_penalties(self, loss: torch.Tensor, parts: dict[str, float]) -> torch.Tensor:
        """`loss` plus the shared penalties of the weights (L2-SP), once per batch."""
        if self.l2sp is not None:
            penalty = self.l2sp()
            loss = loss + self.l2sp_weight * penalty
            parts["l2sp_loss"] = float(penalty.detach())
        return loss

    def plain_loss(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Plain fine-tuning's loss of the batch (one clean forward), before penalties."""
        task = self.task_loss(model(**model_inputs(batch)).logits, batch["labels"])
        return task, self.plain_parts(task)

    def plain_parts(self, task: torch.Tensor) -> dict[str, float]:
        return {"task_loss": float(task.detach())}

    def record_push(
        self, z: torch.Tensor, perturbation: torch.Tensor, mask: torch.Tensor, gradient: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Keep the batch's push (`last_push`) and return its measured size (`perturbation_stats`)."""
        self.last_push = Push(z.detach(), perturbation.detach(), mask.detach())
        return perturbation_stats(z, perturbation, mask, gradient)

    # --- the contract ---------------------------------------------------------------------
    def loss(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The batch's training loss before penalties (a one-backward method's whole work)."""
        raise NotImplementedError(f"{type(self).__name__} implements train_batch instead of loss")

    def objective(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The whole loss of a one-backward method: its loss (plain's where inactive) + penalties."""
        loss, parts = self.loss(model, batch) if self.active else self.plain_loss(model, batch)
        return self.with_penalties(loss, parts), parts

    def train_batch(self, model, batch: Mapping[str, Any], ctx: BatchContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Gradients and the update(s) for one batch; returns (the loss to log, its parts)."""
        with ctx.autocast():
            loss, parts = self.objective(model, batch)
        ctx.backward(loss)
        if ctx.update():
            self.after_update(model)
        return loss, parts

    # --- hooks of the loop ----------------------------------------------------------------
    @classmethod
    def prepare_model(cls, model, cfg) -> None:
        """Changes to the bare model that must come before it is wrapped for data parallelism
        (DDP hooks each parameter's gradient when it wraps the model), and before the method is
        built: R4F's spectral normalization of the head. The loop calls it once per run."""

    def after_update(self, model) -> None:
        """After each optimizer update that was applied (SMART's teacher follows the model)."""

    def start_stage(self, model, *, stage_index: int, fresh_head: bool, active_before: bool) -> None:
        """At a stage's start, before its optimizer exists; `active` is already set for it."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint must hold to continue exactly (beyond the weights)."""
        return {"skipped": self.skipped}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.skipped = state.get("skipped", 0)


class MeasureContext:
    """A `BatchContext` for measuring a method outside a loop: backward is real (a method may read
    its own input gradients, as FreeLB does), but no update is ever made: the gradients are
    dropped, so every method can be measured on the same weights."""

    def __init__(self, model):
        self.model = model

    def autocast(self) -> AbstractContextManager:
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> bool:
        if not bool(torch.isfinite(loss.detach())):
            return False
        loss.backward()
        return True

    def update(self) -> bool:
        self.model.zero_grad(set_to_none=True)
        return False


@torch.no_grad()
def perturbation_stats(
    z: torch.Tensor, perturbation: torch.Tensor, mask: torch.Tensor, gradient: torch.Tensor | None = None
) -> dict[str, float]:
    """The measured size of a push, as every method that perturbs an input logs it.

    `z` (B, L, H) is the clean tensor at the perturbed point, `perturbation` the raw push Δ added
    to it, `mask` (B, L) the real tokens. Means over real tokens of ‖Δ_t‖₂ (``perturbation_norm``)
    and ‖Δ_t‖₂/‖z_t‖₂ (``relative_perturbation``, the studies' x axis), and, where the method
    ascends, the cosine between Δ_t and the last ascent gradient (``ascent_cosine``).
    """
    real = mask.to(torch.bool)
    n = real.sum().clamp_min(1)
    pert = perturbation.detach().float()
    pert_norm = pert.norm(dim=-1)
    token_norm = z.detach().float().norm(dim=-1).clamp_min(TINY)
    stats = {
        "perturbation_norm": float((pert_norm * real).sum() / n),
        "relative_perturbation": float((pert_norm / token_norm * real).sum() / n),
    }
    if gradient is not None:
        cos = torch.nn.functional.cosine_similarity(pert, gradient.detach().float(), dim=-1)
        stats["ascent_cosine"] = float((cos * real).sum() / n)
    return stats
