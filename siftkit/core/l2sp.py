"""L2-SP: a penalty that keeps the pre-trained encoder near its starting weights (a control)."""

from __future__ import annotations

import torch
from torch import nn

from siftkit.core.split import unwrap


class L2SP:
    r"""L2-SP (Li, Grandvalet & Davoine, ICML 2018): ``||theta - theta_0||^2`` summed over the
    pre-trained encoder's parameters, toward the weights they had when this object was built.

    The encoder is the model's ``base_model`` (HF's own split between the pre-trained body and
    the task head); the classification head is new, so it has no starting point to stay near
    and is left out, as in the paper. The weight alpha is applied by the caller. Its gradient is
    ``2 (theta - theta_0)``: it pulls every encoder weight back toward the pre-trained one.
    """

    def __init__(self, model: nn.Module):
        base = unwrap(model).base_model
        self.params = [p for p in base.parameters() if p.requires_grad]
        self.anchor = [p.detach().clone() for p in self.params]

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=self.params[0].device)
        for p, p0 in zip(self.params, self.anchor):
            total = total + (p.float() - p0.float()).pow(2).sum()
        return total
