r"""PGD-K adversarial training on the word embeddings, as zhuchen03/FreeLB's fairseq code does it.

The code is ``std_adv_train_step`` in ``fairseq-RoBERTa/fairseq/tasks/sentence_prediction.py``
(``--std-adv``). With ``e = W[ids]`` and ``delta_0`` the l2 random start
(`siftkit.methods.embedding_attack`), for ``t = 1..K`` (``adv_K``):

    g_t = d CE(f(e + delta_{t-1})) / d delta        (input gradient only: no parameter gradient)
    delta_t = ball(delta_{t-1} + adv_lr * g_t / ||g_t||)   (whole-sequence l2 norm, l2 ball)

then the loss is ``CE(f(e + delta_K))`` alone, with one backward and one optimizer update (the
K ascent losses train nothing). Dropout: the code's first forward draws masks that its later
forwards reuse (``init_dp``); the kit restores the random generators before each forward, so
all K + 1 forwards share the masks (``adv_sync_dropout=True``; False: fresh masks in each).

The ascent runs on the bare model (its backward reaches delta only; under DDP it must not go
through the wrapper, which expects a backward into the parameters), the final forward on the
model as passed. A non-finite ascent gradient ends the ascent at the delta it was taken at
(counted in ``skipped``); a non-finite final loss is dropped by the loop.

Logged: ``task_loss`` the final adversarial CE (the loss it trains on), the size of ``delta_K``
(``perturbation_norm``, ``relative_perturbation``, per real token at the word embeddings) and
its cosine with ``g_K`` (``ascent_cosine``). Cost: K + 1 forwards, K input-gradient backwards
and one full backward, one update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from siftkit.core.regularizers import input_gradient
from siftkit.methods.embedding_attack import EmbeddingAttackMethod, RngReplay


class PGD(EmbeddingAttackMethod):
    """PGD-K: ascend delta K times, then train on the last adversarial loss only."""

    name = "pgd"

    def loss(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.settings
        labels = batch["labels"]
        with torch.no_grad():
            z_fixed = self.word_embeddings(self.split, batch)
        delta = self.start(z_fixed, batch)
        replay = RngReplay(z_fixed.device) if s.adv_sync_dropout else None
        grad = None
        # The ascent needs autograd even where the loss is only measured (a notebook's no_grad).
        with torch.enable_grad():
            for t in range(s.adv_K):
                if replay is not None and t > 0:
                    replay.restore()
                delta.requires_grad_(True)
                ascent = self.task_loss(self.perturbed_logits(self.split, batch, z_fixed, delta), labels)
                g = input_gradient(ascent, delta)
                if not bool(torch.isfinite(g).all()):
                    self.skipped += 1
                    break
                grad = g.detach()
                delta = self.step(delta.detach(), grad, batch)
        if replay is not None and s.adv_K > 0:
            replay.restore()
        split = self.split_for(model)
        task = self.task_loss(
            self.perturbed_logits(split, batch, self.word_embeddings(split, batch), delta.detach()), labels
        )
        parts = {"task_loss": float(task.detach())}
        parts.update(self.size_parts(z_fixed, delta.detach(), batch, grad))
        return task, parts
