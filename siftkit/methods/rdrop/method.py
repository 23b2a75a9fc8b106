r"""R-Drop's training loss (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks").

The batch goes through the model twice with independent dropout, giving logits ``l_1``, ``l_2``
and class distributions ``p_1``, ``p_2``:

    loss = CE(l_1, y) + CE(l_2, y) + reg_alpha * reduce_i[(KL(p_1 || p_2) + KL(p_2 || p_1)) / 2]

with gradient into both distributions of both KLs (the official codes detach neither), the
KLs in float32. ``rdrop_reduction``: ``mean`` averages the per-example term over the batch, as
the fairseq RoBERTa GLUE code does (``reg_cross_entropy.py``: cross-entropies and KLs are sums,
which fairseq divides by the number of sentences); ``sum`` sums it over the batch, as the
Hugging Face BERT GLUE code does (``modeling_bert.py`` ``bert_kl``: each cross-entropy a batch
mean, the KLs ``reduction='none'`` then ``.sum()``, weight 0.5 hard-coded). ``mean`` is the
default: alpha then means the same at any batch size, and the term is on the cross-entropy's
scale. (The Hugging Face RoBERTa code is a third variant: ``0.5 * (CE_1 + CE_2)`` with 0.7 on
summed KLs.)

The two forwards run as one forward of the batch repeated, ``[x; x]``, split in halves
afterwards (the paper's implementation note; its translation code does this; the GLUE codes
call the model twice): dropout draws an independent mask for every element of the doubled
batch, so the halves get independent masks, and a model wrapped for DDP sees one forward per
backward. Cost per batch: one forward and one backward of a batch twice the size.

Logged: ``task_loss`` is the mean of the two cross-entropies (comparable with plain
fine-tuning's single one; the loss trained on holds their sum), ``adv_loss`` the reduced KL
term, ``reg_loss`` = ``reg_alpha * adv_loss``. Nothing is perturbed but the dropout masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from siftkit.core.divergences import symmetric_kl_per_example
from siftkit.core.split import model_inputs
from siftkit.methods.base import Method


def doubled(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Each batch tensor repeated along the batch dimension: ``[x; x]``."""
    return {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in inputs.items()}


class RDrop(Method):
    """R-Drop: two dropout forwards of one batch, CE of each + reg_alpha * their symmetric KL / 2."""

    name = "rdrop"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.settings = cfg.settings

    def plain_parts(self, task: torch.Tensor) -> dict[str, float]:
        return {"task_loss": float(task.detach()), "adv_loss": 0.0, "reg_loss": 0.0}

    def loss(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]
        logits = model(**doubled(model_inputs(batch))).logits
        first, second = logits[: len(labels)], logits[len(labels) :]
        ce_first, ce_second = self.task_loss(first, labels), self.task_loss(second, labels)
        term = self.kl_term(first, second)
        weighted = self.settings.reg_alpha * term
        parts = {
            "task_loss": float((ce_first + ce_second).detach()) / 2,
            "adv_loss": float(term.detach()),
            "reg_loss": float(weighted.detach()),
        }
        return ce_first + ce_second + weighted, parts

    def kl_term(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``(KL(p_1 || p_2) + KL(p_2 || p_1)) / 2`` per example, reduced by ``rdrop_reduction``."""
        per_example = symmetric_kl_per_example(first, second) / 2
        return per_example.mean() if self.settings.rdrop_reduction == "mean" else per_example.sum()
