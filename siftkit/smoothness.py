"""Held-out smoothness: how much a model's predictions move under a small random push.

What SMART's and SiFT's regularizer is meant to buy is a model that is smooth around its
inputs. Measured on the *evaluation* sets (where nothing was trained), after each
evaluation: the mean over examples of ``sym_kl(f(z + Delta), f(z))`` at
``embedding_output``, where each real token's ``Delta_t`` points in a random direction and
has ``||Delta_t|| = r * ||z_t||`` exactly. The probes are fixed: drawn from a CPU generator
seeded by (probe seed, relative size, *global* batch index), so every algorithm, seed,
device and number of processes is measured with the same directions (accelerate hands
process p the global batches p, p + N, ...; the batches themselves do not change).
Metric names: ``<eval>_smoothness_<r>`` (lower = smoother), r in `PROBE_SIZES`.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from siftkit.divergences import symmetric_kl_per_example
from siftkit.split import EmbeddingSplit

PROBE_SIZES = (0.01, 0.3)  # relative per-token sizes: the kit's small regime and the public codes'
PROBE_AT = "embedding_output"
_PROBE_SEED = 7_919


def metric_name(eval_name: str, size: float) -> str:
    return f"{eval_name}_smoothness_{size:g}"


def random_probe(z: torch.Tensor, mask: torch.Tensor, size: float, seed: int) -> torch.Tensor:
    """A perturbation of z with ||Delta_t|| = size * ||z_t|| on real tokens, 0 on padding."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(z.shape, generator=g, dtype=torch.float32).to(z.device)
    zf = z.float()
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return u * (size * zf.norm(dim=-1, keepdim=True)) * mask.unsqueeze(-1).to(u.dtype)


@torch.no_grad()
def probe_divergences(split: EmbeddingSplit, batch: Mapping[str, Any], *, batch_index: int,
                      sizes=PROBE_SIZES) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """(clean logits, {size: per-example sym-KL}) for one evaluation batch; `batch_index`
    is the batch's index in the whole (unsharded) evaluation set."""
    logits, z = split.forward_capture(batch, PROBE_AT)
    mask = batch["attention_mask"].to(device=z.device, dtype=torch.bool)
    out = {}
    for k, size in enumerate(sizes):
        seed = _PROBE_SEED + 1_000_003 * k + 1_009 * batch_index
        delta = random_probe(z, mask, size, seed)
        pushed = split.forward_from((z.float() + delta).to(z.dtype), batch, PROBE_AT)
        out[size] = symmetric_kl_per_example(pushed, logits)
    return logits, out
