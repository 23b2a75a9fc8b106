"""Plain fine-tuning, SMART and SiFT: the task loss, + adv_weight * R, + SMART's Bregman term.

R is `siftkit.core.regularizers` (one regularizer; SiFT perturbs per-token normalized
embeddings), the Bregman proximal point `siftkit.core.bregman`. Their knobs are RunConfig's
own shared fields (``adv_epsilon``, ``adv_steps``, ``adv_rule``, ...). Forwards per batch:
plain 1; SMART and SiFT 2 + K (+1 no-grad teacher forward for SMART's Bregman term); one
backward through everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from siftkit.core.bregman import BregmanProximalPoint
from siftkit.core.regularizers import REGULARIZERS, AdversarialRegularizer
from siftkit.core.split import EmbeddingSplit, model_inputs, unwrap
from siftkit.methods.base import Method, Push

_PLAIN_PARTS = ("adv_loss", "bregman_loss", "perturbation_norm", "relative_perturbation")


class AdversarialMethod(Method):
    """task + adv_weight * R (+ bregman_weight * Bregman); R and Bregman only while `active`."""

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        # The regularizer's 1 + K extra forwards run on the bare module; only the clean
        # forward goes through `model` as passed to `loss` (DDP, see there).
        self.split = EmbeddingSplit(unwrap(model))
        self._wrapped_split: EmbeddingSplit | None = None
        self.regularizer: AdversarialRegularizer | None = (
            REGULARIZERS[cfg.algo].from_config(cfg) if cfg.algo in REGULARIZERS else None
        )
        self.bregman: BregmanProximalPoint | None = (
            BregmanProximalPoint(model, bregman_beta=cfg.bregman_beta, divergence=cfg.divergence)
            if cfg.uses_bregman
            else None
        )
        self.perturbs_input = self.regularizer is not None

    def plain_parts(self, task: torch.Tensor) -> dict[str, float]:
        # The same logged columns whether or not R runs, so a run's history has one shape.
        return {"task_loss": float(task.detach()), **dict.fromkeys(_PLAIN_PARTS, 0.0)}

    def objective(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        reg = self.regularizer if self.active else None
        bregman = self.bregman if self.active else None
        labels = batch["labels"]
        if reg is not None:
            # Under DDP every process must run the same collectives (DDP's forward may
            # broadcast buffers), but R's forwards differ per process: a process whose
            # ascent gradient is not finite skips R. So only this clean forward goes through
            # the wrapper; R's forwards use the bare module. Gradients stay correct: each
            # parameter's AccumulateGrad fires once per backward with the sum of both
            # branches, and that hook is what DDP all-reduces.
            logits, z = self._split_for(model).forward_capture(batch, reg.perturb_at)
        else:
            logits, z = model(**model_inputs(batch)).logits, None
        task = self.task_loss(logits, labels)
        loss = task
        parts = self.plain_parts(task)
        if reg is not None:
            r = reg(self.split, batch, logits, z)
            loss = loss + reg.adv_weight * r
            parts["adv_loss"] = float(r.detach())
            parts.update(reg.last_stats)
            if reg.last_perturbation is not None:  # kept for figures; the stats are the regularizer's own
                self.last_push = Push(z.detach(), reg.last_perturbation, batch["attention_mask"].detach())
        if bregman is not None:
            b = bregman(batch, logits)
            loss = loss + self.cfg.bregman_weight * b
            parts["bregman_loss"] = float(b.detach())
        return self.with_penalties(loss, parts), parts

    def _split_for(self, model) -> EmbeddingSplit:
        if model is self.split.model:
            return self.split
        if self._wrapped_split is None or self._wrapped_split.model is not model:
            if unwrap(model) is not self.split.model:
                raise ValueError("this method was built for another model")
            self._wrapped_split = EmbeddingSplit(model)
        return self._wrapped_split

    # --- the loop's hooks -----------------------------------------------------------------
    def after_update(self, model) -> None:
        if self.bregman is not None and self.active:
            self.bregman.update(model)

    def start_stage(self, model, *, stage_index: int, fresh_head: bool, active_before: bool) -> None:
        # SMART's teacher starts anew where its term starts anew: after a fresh head, or in a
        # stage whose predecessor ran without it.
        if self.bregman is not None and self.active and (fresh_head or (stage_index > 0 and not active_before)):
            self.bregman.reset(model)

    @property
    def skipped(self) -> int:
        return self.regularizer.skipped if self.regularizer is not None else 0

    @skipped.setter
    def skipped(self, value: int) -> None:
        if getattr(self, "regularizer", None) is not None:
            self.regularizer.skipped = value

    def state(self) -> dict[str, Any]:
        return {
            "teacher": self.bregman.state_dict_for_checkpoint() if self.bregman is not None else None,
            "skipped": self.skipped,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        if self.bregman is not None and state.get("teacher") is not None:
            self.bregman.load_checkpoint_state(state["teacher"])
        self.skipped = state.get("skipped", 0)


class Plain(AdversarialMethod):
    """Plain fine-tuning: the task loss alone (one forward, one backward)."""

    name = "plain"


class SmartMethod(AdversarialMethod):
    """SMART (Jiang et al. 2020): R on raw embeddings + the Bregman proximal point."""

    name = "smart"


class SiftMethod(AdversarialMethod):
    """SiFT (He et al. 2021): R on per-token normalized embeddings."""

    name = "sift"
