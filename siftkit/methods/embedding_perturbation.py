"""What R3F and VAT share: one-backward methods that push the tensor at a point of the embedding
block (``perturb_at``, their default the word-embedding lookup W[ids], i.e. ``inputs_embeds``) and
add a divergence between the pushed and the clean outputs to the task loss.

The clean forward goes through the model as the loop passes it (DDP's wrapper included) and
returns the logits and the tensor at the point; the method's extra forwards run on the bare
module (`siftkit.core.split.EmbeddingSplit`), as SMART's and SiFT's do (see
`siftkit.methods.adversarial` on why that keeps DDP's collectives and gradients right).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from siftkit.core.split import EmbeddingSplit, UnsupportedModelError, unwrap
from siftkit.methods.adversarial import AdversarialMethod
from siftkit.methods.base import Method

_POINTS = {
    "word_embeddings": "the word-embedding lookup",
    "embedding_output": "the embedding block's output",
    "pre_layernorm": "the embedding LayerNorm's input",
}


class EmbeddingPerturbationMethod(Method):
    """A method whose loss is ``task + weight * D(f(z + delta), f(z))`` for a push delta at `perturb_at`.

    Subclasses set `logged_parts` (the columns they log where they act) and implement `loss`;
    `clean_forward` and `split` give the forwards.
    """

    perturbs_input = True
    logged_parts: tuple[str, ...] = ("adv_loss", "reg_loss", "perturbation_norm", "relative_perturbation")

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.settings = cfg.settings
        self.perturb_at: str = cfg.perturb_at
        bare = unwrap(model)
        try:
            self.split = EmbeddingSplit(bare)
            self.split.module_at(self.perturb_at)
        except UnsupportedModelError as exc:
            where = _POINTS.get(self.perturb_at, self.perturb_at)
            raise UnsupportedModelError(
                f"algo={cfg.algo!r} perturbs perturb_at={self.perturb_at!r} ({where}), which "
                f"this model does not have: {exc}"
            ) from None
        self._wrapped_split: EmbeddingSplit | None = None

    def plain_parts(self, task: torch.Tensor) -> dict[str, float]:
        # Where the method does not act (adv_stages) the batch is plain fine-tuning's, logged parts
        # included: a stage shared with a plain run through the stage cache has one history.
        return AdversarialMethod.plain_parts(self, task)

    def clean_forward(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(clean logits, the tensor at `perturb_at`) from one forward through `model`; the
        tensor stays in the graph (the clean branch trains what lies below the point)."""
        return self._split_for(model).forward_capture(batch, self.perturb_at)

    def _split_for(self, model) -> EmbeddingSplit:
        if model is self.split.model:
            return self.split
        if self._wrapped_split is None or self._wrapped_split.model is not model:
            if unwrap(model) is not self.split.model:
                raise ValueError(f"this {self.name} method was built for another model")
            self._wrapped_split = EmbeddingSplit(model)
        return self._wrapped_split


def work_dtype(z: torch.Tensor) -> torch.dtype:
    """Pushes and their arithmetic in float32 at least (an fp16 push below the format's
    resolution is lost); a float64 model keeps float64."""
    return torch.promote_types(z.dtype, torch.float32)
