"""The training objective of one batch: task loss + adv_weight * R (+ bregman_weight * Bregman).

Its own module because two loops share it: the native `siftkit.run.training.train` and
`siftkit.AdversarialTrainer` (HF Trainer) both call `AdversarialLoss`, so they compute the
same number from the same batch and RNG state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from siftkit.run.config import RunConfig
from siftkit.core.bregman import BregmanProximalPoint
from siftkit.core.l2sp import L2SP
from siftkit.core.regularizers import REGULARIZERS, AdversarialRegularizer
from siftkit.core.split import EmbeddingSplit, model_inputs, unwrap


class AdversarialLoss:
    """Task loss + adv_weight * R (+ bregman_weight * Bregman) (+ l2sp_weight * L2-SP) for one batch.

    Shared by the native loop and `siftkit.AdversarialTrainer` so both compute the same
    number from the same batch and RNG state. The task loss takes ``cfg.label_smoothing``.
    ``adversarial = False`` switches R and Bregman off (the stages ``adv_stages`` leaves out):
    the batch then costs, draws and logs exactly what a plain run's does.
    """

    def __init__(self, model, cfg: RunConfig):
        self.cfg = cfg
        # The regularizer's 1 + K extra forwards run on the bare module; only the clean
        # forward goes through `model` as passed to __call__ (DDP, see there).
        self.split = EmbeddingSplit(unwrap(model))
        self._wrapped_split: EmbeddingSplit | None = None
        self.regularizer: AdversarialRegularizer | None = (
            REGULARIZERS[cfg.algo].from_config(cfg) if cfg.regularized else None)
        self.bregman: BregmanProximalPoint | None = (
            BregmanProximalPoint(model, bregman_beta=cfg.bregman_beta, divergence=cfg.divergence)
            if cfg.uses_bregman else None)
        self.label_smoothing = cfg.label_smoothing
        # theta_0 is the model as it is now: built before any training, the pre-trained weights.
        self.l2sp: L2SP | None = L2SP(model) if cfg.l2sp_weight > 0 else None
        self.adversarial = True

    def __call__(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]
        reg = self.regularizer if self.adversarial else None
        bregman = self.bregman if self.adversarial else None
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
        task = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        loss = task
        parts = {"task_loss": float(task.detach()), "adv_loss": 0.0, "bregman_loss": 0.0,
                 "perturbation_norm": 0.0, "relative_perturbation": 0.0}
        if reg is not None:
            r = reg(self.split, batch, logits, z)
            loss = loss + reg.adv_weight * r
            parts["adv_loss"] = float(r.detach())
            parts.update(reg.last_stats)
        if bregman is not None:
            b = bregman(batch, logits)
            loss = loss + self.cfg.bregman_weight * b
            parts["bregman_loss"] = float(b.detach())
        if self.l2sp is not None:
            penalty = self.l2sp()
            loss = loss + self.cfg.l2sp_weight * penalty
            parts["l2sp_loss"] = float(penalty.detach())
        return loss, parts

    def _split_for(self, model) -> EmbeddingSplit:
        if model is self.split.model:
            return self.split
        if self._wrapped_split is None or self._wrapped_split.model is not model:
            if unwrap(model) is not self.split.model:
                raise ValueError("this AdversarialLoss was built for another model")
            self._wrapped_split = EmbeddingSplit(model)
        return self._wrapped_split

    @property
    def skipped(self) -> int:
        return self.regularizer.skipped if self.regularizer is not None else 0
