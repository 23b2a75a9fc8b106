r"""FreeAT ("adversarial training for free", Shafahi et al. 2019) on the word embeddings, as
zhuchen03/FreeLB's fairseq code runs it.

The code is ``freeat_train_step`` in ``fairseq-RoBERTa/fairseq/trainer.py`` and
``freeat_adv_train_step`` in ``fairseq-RoBERTa/fairseq/tasks/sentence_prediction.py``
(``--per-step-adv``). Each batch is replayed K times (``adv_K``); with ``delta_0`` the l2
random start (`siftkit.methods.embedding_attack`), drawn at the first replay, for ``r = 1..K``:

    e_r = W_r[ids]                              (the table as the previous replay's update left it)
    loss_r = CE(f(e_r + delta_{r-1})) / (1 + K);  backward(loss_r)
    delta_r = ball(delta_{r-1} + adv_lr * g_r / ||g_r||)   (g_r from the same backward: "free")
    one optimizer update (clip, step, schedule), gradients zeroed

delta is carried from replay to replay within the batch and starts anew with the next batch.
Each replay's forward draws its own dropout masks (the code's ``init_dp=True``). The division
by ``1 + K`` is the code's (``adv_scale_loss=True``; False trains on the plain CE); with AdamW
it matters only through gradient clipping and Adam's epsilon. The L2-SP penalty joins every
replay's loss (each replay is an update of its own), scaled with it.

The budget: the loop runs ``ceil(plain's updates / K)`` batches, so FreeAT makes as many
updates as plain, over 1/K of its batches (the FreeAT paper's "epochs divided by K"), and the
learning-rate schedule advances at every update. The code differs: it keeps the full number
of epochs (K times plain's updates) and advances the schedule once per batch.

Logged: ``task_loss`` the mean CE over the K replays, ``loss`` the mean objective before the
``1/(1+K)`` scaling, the size of the last replay's delta (``perturbation_norm``,
``relative_perturbation``, per real token at the word embeddings) and its cosine with the
gradient that made its last step (``ascent_cosine``; NaN for K = 1); the gradient norm is the
first update's. Cost per batch: K forwards, K backwards, K updates (per update, plain's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from siftkit.methods.embedding_attack import EmbeddingAttackMethod


class FreeAT(EmbeddingAttackMethod):
    """FreeAT: the batch replayed K times, delta carried over, an update at every replay."""

    name = "freeat"

    @property
    def updates_per_batch(self) -> int:
        # In a stage that adv_stages leaves out, a batch is plain's: one update.
        return self.settings.adv_K if self.active else 1

    def train_batch(self, model, batch: Mapping[str, Any], ctx) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.active:
            return super().train_batch(model, batch, ctx)  # plain fine-tuning's batch, exactly
        s = self.settings
        k = s.adv_K
        scale = 1.0 / (1 + k) if s.adv_scale_loss else 1.0
        split = self.split_for(model)
        labels = batch["labels"]
        parts: dict[str, float] = {}
        objectives, task_losses = [], []
        delta = None
        used, used_grad, z_used = None, None, None  # the last replay's delta, the gradient that made it
        grad = None
        for r in range(k):
            with ctx.autocast():
                z = self.word_embeddings(split, batch)
                if delta is None:
                    delta = self.start(z.detach(), batch)
                delta.requires_grad_(True)
                task = self.task_loss(self.perturbed_logits(split, batch, z, delta), labels)
                objective = self.with_penalties(task, parts)
                loss = objective * scale if scale != 1.0 else objective
            used, used_grad, z_used = delta.detach(), grad, z.detach()
            task_losses.append(float(task.detach()))
            objectives.append(objective.detach().float())
            # The last replay's step would never be used. A non-finite loss or input gradient (an
            # fp16 overflow) leaves delta where it is.
            if ctx.backward(loss) and r < k - 1 and bool(torch.isfinite(delta.grad).all()):
                grad = delta.grad.detach()
                delta = self.step(delta.detach(), grad, batch)
            else:
                if r < k - 1:
                    self.skipped += 1
                delta = delta.detach()
            if ctx.update():
                self.after_update(model)
        parts["task_loss"] = sum(task_losses) / k
        parts.update(self.size_parts(z_used, used, batch, used_grad))
        return torch.stack(objectives).mean(), parts
