"""WiSE-FT's weight-space ensembles (Wortsman et al., CVPR 2022): theta_alpha = (1 - alpha) theta_0
+ alpha theta_1 between the weights fine-tuning started from (theta_0) and the fine-tuned ones
(theta_1), and the choice of alpha on a validation metric.

mlfoundations/wise-ft (``src/wise_ft.py``) interpolates every entry of the two state dicts: its
zero-shot CLIP classifier has a head of its own. A text encoder fine-tuned with a new head has
no pre-trained head to go back to, so the default scope is the encoder only (wise-ft issue #8),
the head kept as fine-tuned; scope ``"model"`` interpolates the head too, toward the head the run
started with. theta_0 is taken as L2-SP takes its anchor (`siftkit.core.l2sp`): the model as
training starts, before any update.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from siftkit.core.split import unwrap


def scope_keys(model: nn.Module, scope: str) -> list[str]:
    """The floating-point state-dict entries WiSE-FT interpolates: the encoder's (``base_model``)
    for scope ``"encoder"``, every one for ``"model"`` (integer buffers such as position ids are
    never interpolated)."""
    bare = unwrap(model)
    state = bare.state_dict()
    if scope == "model":
        keys = list(state)
    elif scope == "encoder":
        base = bare.base_model
        if base is bare:
            keys = list(state)
        else:
            prefix = next(name for name, child in bare.named_children() if child is base) + "."
            keys = [k for k in state if k.startswith(prefix)]
    else:
        raise ValueError(f"wise_ft_scope must be 'encoder' or 'model', got {scope!r}")
    return [k for k in keys if state[k].is_floating_point()]


@torch.no_grad()
def snapshot(model: nn.Module, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Copies of the model's state entries `keys`, as they are now (theta_0 before training, theta_1 after)."""
    state = unwrap(model).state_dict()
    return {k: state[k].detach().clone() for k in keys}


@torch.no_grad()
def interpolate(
    theta_0: Mapping[str, torch.Tensor], theta_1: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * theta_0 + alpha * theta_1`` entry by entry, as the official code computes it.

    At alpha 0 and 1 the result is theta_0 and theta_1 themselves (copies), bit for bit: the
    formula would give them up to the sign of a zero and a NaN where the other side is infinite.
    """
    if set(theta_0) != set(theta_1):
        raise ValueError("theta_0 and theta_1 must hold the same entries")
    if alpha == 0.0:
        return {k: v.clone() for k, v in theta_0.items()}
    if alpha == 1.0:
        return {k: v.clone() for k, v in theta_1.items()}
    return {k: ((1.0 - alpha) * theta_0[k].float() + alpha * theta_1[k].float()).to(theta_1[k].dtype) for k in theta_0}


@torch.no_grad()
def load_entries(model: nn.Module, entries: Mapping[str, torch.Tensor]) -> None:
    """Copy `entries` into the model's parameters and buffers of those names, in place."""
    state = unwrap(model).state_dict()
    for k, v in entries.items():
        state[k].copy_(v)


def choose_alpha(curve: Sequence[Mapping[str, float]], select_on: str) -> float:
    """The alpha with the highest `select_on` (a validation metric) on `curve` (rows with ``alpha``);
    a tie goes to the larger alpha (the one nearer the fine-tuned model); a NaN never wins.

    Only `select_on` is read: the rows may carry test metrics (for the figure), and they never choose.
    """
    finite = [row for row in curve if isinstance(row.get(select_on), (int, float)) and math.isfinite(row[select_on])]
    if not finite:
        raise ValueError(f"WiSE-FT: no alpha has a finite {select_on}; nothing to choose on")
    return max(finite, key=lambda row: (row[select_on], row["alpha"]))["alpha"]
