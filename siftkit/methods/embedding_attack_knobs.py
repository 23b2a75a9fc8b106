"""The knobs FreeLB, PGD-K and FreeAT share, and the checks they share (torch-free).

The three methods come from one repository (zhuchen03/FreeLB) and perturb the word embeddings
with one rule: a random start of size ``adv_init_mag``, ``adv_K`` steps of size ``adv_lr``
along the gradient normalized over the whole sequence, and an optional ball of radius
``adv_max_norm`` (0: none). Each method's settings class declares these knobs with its own
published defaults and sources (`siftkit.methods.freelb.settings`, ...); the torch code they
share is `siftkit.methods.embedding_attack`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from siftkit.methods.knobs import MethodSettings

NORM_TYPES = ("l2", "linf")


@dataclass
class EmbeddingAttackSettings(MethodSettings):
    """Checks shared by the methods whose knobs are adv_K, adv_lr, adv_init_mag, adv_max_norm and
    adv_norm_type. Subclasses declare those fields (with their own defaults and sources)."""

    # The word-embedding lookup W[ids], what the official codes feed as `inputs_embeds`.
    perturb_points: ClassVar[tuple] = ("word_embeddings",)
    # Where the official code has only the l2 rule (its init, step and ball are all l2), the
    # sentence that says so; None where it has both (FreeLB's `--norm-type`).
    l2_only: ClassVar[str | None] = None

    def check(self) -> None:
        k = self.adv_K
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(
                f"adv_K must be an int >= 1 for algo={self.algo!r} (the number of {self._k_means}), got {k!r}"
            )
        self._non_negative("adv_lr", "adv_init_mag", "adv_max_norm")
        if self.l2_only is not None and self.adv_norm_type != "l2":
            raise ValueError(
                f"adv_norm_type={self.adv_norm_type!r} is not available for algo={self.algo!r}: "
                f"{self.l2_only}; leave adv_norm_type='l2', or use algo='freelb', whose code has "
                f"the linf rule"
            )

    _k_means: ClassVar[str] = "ascent steps"
