"""Held-out smoothness: how much a model's predictions move under a small random push.

What SMART's and SiFT's regularizer is meant to buy is a model that is smooth around its
inputs. Measured on the *evaluation* sets (where nothing was trained), after each
evaluation: the mean over examples of ``sym_kl(f(z + Delta), f(z))`` at
``embedding_output``, where each real token's ``Delta_t`` points in a random direction and
has ``||Delta_t|| = r * ||z_t||`` exactly (padding positions get 0).

The probes are fixed per *example*: example ``i`` of an eval set (its index in the whole,
unsharded set) gets its directions from a CPU generator seeded by (probe seed, relative
size, ``i``), one draw of shape (real tokens, hidden) placed on its real tokens in position
order. So an example's probe does not depend on the batch it lands in, the batch size, the
order of the batches, how far (or on which side) the batch was padded, the device, or the
number of processes; every algorithm and seed is measured with the same directions.
Metric names: ``<eval>_smoothness_<r>`` (lower = smoother), r in `PROBE_SIZES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from siftkit.core.divergences import symmetric_kl_per_example
from siftkit.core.split import EmbeddingSplit

PROBE_SIZES = (0.01, 0.3)  # relative per-token sizes: the kit's small regime and the public codes'
PROBE_AT = "embedding_output"
_PROBE_SEED = 7_919


def metric_name(eval_name: str, size: float) -> str:
    return f"{eval_name}_smoothness_{size:g}"


def probe_seed(size_index: int, example_index: int) -> int:
    """The seed of one example's probe at the `size_index`-th size (distinct for all
    example indices below 1,000,003: both multipliers are prime)."""
    return _PROBE_SEED + 1_000_003 * size_index + 1_009 * example_index


def random_probe(z: torch.Tensor, mask: torch.Tensor, size: float, seeds: Sequence[int]) -> torch.Tensor:
    """A perturbation of z with ||Delta_t|| = size * ||z_t|| on real tokens, 0 on padding.

    Example ``b``'s directions come from a generator seeded by ``seeds[b]`` alone: one draw
    per real token, in position order, so they do not depend on the padding around them.
    """
    mask = mask.to(dtype=torch.bool, device="cpu")
    if len(seeds) != z.shape[0]:
        raise ValueError(f"random_probe needs one seed per example: {len(seeds)} seeds for a batch of {z.shape[0]}")
    counts = mask.sum(-1).tolist()
    draws = [
        torch.randn((n, z.shape[-1]), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)
        for n, seed in zip(counts, seeds)
    ]
    u = torch.zeros(z.shape, dtype=torch.float32)
    u[mask] = torch.cat(draws)
    u = u.to(z.device)
    zf = z.float()
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return u * (size * zf.norm(dim=-1, keepdim=True)) * mask.to(u.device).unsqueeze(-1).to(u.dtype)


@torch.no_grad()
def probe_divergences(
    split: EmbeddingSplit, batch: Mapping[str, Any], *, example_indices: Sequence[int], sizes=PROBE_SIZES
) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """(clean logits, {size: per-example sym-KL}) for one evaluation batch; `example_indices`
    are the batch's examples' indices in the whole (unsharded) evaluation set."""
    logits, z = split.forward_capture(batch, PROBE_AT)
    mask = batch["attention_mask"].to(device=z.device, dtype=torch.bool)
    out = {}
    for k, size in enumerate(sizes):
        delta = random_probe(z, mask, size, [probe_seed(k, i) for i in example_indices])
        pushed = split.forward_from((z.float() + delta).to(z.dtype), batch, PROBE_AT)
        out[size] = symmetric_kl_per_example(pushed, logits)
    return logits, out
