"""The training method of a run, built from its config, and its whole loss for one batch.

`build_method` is what the native loop (`siftkit.run.training`) and `siftkit.AdversarialTrainer`
both call, so they train with the same object (`siftkit.methods`). `AdversarialLoss` is the
whole loss of one batch of a one-backward method (task + the method's terms + L2-SP), for
`transformers.Trainer.compute_loss` and for measuring a method outside a loop.
"""

from __future__ import annotations

from typing import Any

import torch

from siftkit import methods
from siftkit.methods.base import Method
from siftkit.run.config import RunConfig


def build_method(model, cfg: RunConfig) -> Method:
    """The method `cfg.algo` names, built on `model` (as prepared for training) with `cfg`'s knobs."""
    return methods.method_class(cfg.algo)(model, cfg)


class AdversarialLoss:
    """The whole loss of one batch: ``loss, parts = AdversarialLoss(model, cfg)(model, batch)``.

    For the methods with one backward per batch (every method but FreeLB and FreeAT, which
    own several backwards; use `Method.train_batch` for those). ``adversarial = False`` makes
    the batch plain fine-tuning's (the stages ``adv_stages`` leaves out). The method's own
    attributes (``regularizer``, ``bregman``, ``skipped``, ...) read through.
    """

    def __init__(self, model, cfg: RunConfig):
        self.cfg = cfg
        self.method = build_method(model, cfg)

    def __call__(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.method.objective(model, batch)

    @property
    def adversarial(self) -> bool:
        return self.method.active

    @adversarial.setter
    def adversarial(self, value: bool) -> None:
        self.method.active = value

    def __getattr__(self, name: str) -> Any:
        if name == "method":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.method, name)
