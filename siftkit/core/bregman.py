"""SMART's Bregman proximal point term: the model kept near an EMA teacher of its own iterates."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from siftkit.core.divergences import get_divergence
from siftkit.core.split import unwrap


class BregmanProximalPoint(nn.Module):
    r"""SMART's Bregman proximal point term with an EMA teacher.

    The teacher ``theta~`` starts as a copy of the model and follows it after every
    optimizer step, ``theta~ <- (1 - beta) * theta + beta * theta~`` (``update``). The term
    is ``ls(f(x; theta), f(x; theta~))``: the teacher forward runs without gradient and in
    eval mode, so the target is a fixed function of the previous iterates.
    """

    def __init__(self, model: nn.Module, *, bregman_beta: float = 0.99, divergence: str = "sym_kl"):
        super().__init__()
        if not 0.0 <= bregman_beta < 1.0:
            raise ValueError(f"bregman_beta must be in [0, 1), got {bregman_beta!r}")
        self.beta = float(bregman_beta)
        self.divergence = get_divergence(divergence)
        teacher = copy.deepcopy(unwrap(model))
        teacher.eval()
        teacher.requires_grad_(False)
        # Kept out of the module tree so `.parameters()` of a parent never sees it.
        self.__dict__["teacher"] = teacher

    def forward(self, batch: Mapping[str, Any], student_logits: torch.Tensor) -> torch.Tensor:
        from siftkit.core.split import model_inputs

        with torch.no_grad():
            teacher_logits = self.teacher(**model_inputs(batch)).logits
        return self.divergence(student_logits, teacher_logits)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        student = unwrap(model)
        t_params = list(self.teacher.parameters())
        s_params = [p.detach() for p in student.parameters()]
        # lerp: t + (1 - beta) (s - t) = (1 - beta) s + beta t
        torch._foreach_lerp_(t_params, s_params, 1.0 - self.beta)
        for t_buf, s_buf in zip(self.teacher.buffers(), student.buffers()):
            t_buf.copy_(s_buf)

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Restart the teacher from the model's current weights (a stage whose Bregman term
        starts fresh: ``adv_stages``, or a re-initialised head)."""
        self.teacher.load_state_dict(unwrap(model).state_dict())

    def state_dict_for_checkpoint(self) -> dict[str, torch.Tensor]:
        return self.teacher.state_dict()

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        self.teacher.load_state_dict(state)
