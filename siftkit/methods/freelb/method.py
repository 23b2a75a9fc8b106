r"""FreeLB (Zhu et al., ICLR 2020), as its code does it.

The code is zhuchen03/FreeLB ``huggingface-transformers/examples/run_glue_freelb.py``, the loop
after "Code for adversarial training". With ``e = W[ids]``, ``delta_0`` the random start
(`siftkit.methods.embedding_attack`), for ``t = 1..K`` (``adv_K``):

    loss_t = CE(f(e + delta_{t-1})) / K;  backward(loss_t)   (parameter gradients accumulate)
    t < K:  delta_t = ball(delta_{t-1} + adv_lr * g_t / ||g_t||)   (g_t = d loss_t / d delta, whole-sequence norm)

and at ``t = K`` it stops: the last step does not move delta. Then one clip and one optimizer
update from the accumulated gradient ``(1/K) sum_t grad CE(f(e + delta_{t-1}))``. The word
embeddings ``e`` are looked up again for every forward (the table's gradient is part of every
loss), and, as in the code, no clean loss is added.

Beyond the code:
- ``adv_clean_weight > 0`` adds ``adv_clean_weight * CE(f(e))`` with its own backward before the
  ascent (the variant of FreeLB issue #10; its forward draws its own dropout masks).
- Dropout: FreeLB's patched models pass one set of masks (``dp_masks``) through the K forwards
  (the Hugging Face ALBERT keeps its attention and classifier masks; the fairseq RoBERTa all
  of them). The kit gets the same masks in any model by restoring the random generators before
  each of the K forwards (`RngReplay`), so every dropout layer repeats its mask
  (``adv_sync_dropout=True``, the default); ``adv_sync_dropout=False`` draws fresh masks at
  every step.
- The L2-SP penalty (``l2sp_weight``) joins the first step's loss, so it is counted once.
- A non-finite input gradient (an fp16 overflow) ends the ascent (counted in ``skipped``); the
  loop then drops the update, as it drops any non-finite one.

Logged: ``task_loss`` the mean of the K steps' CE (what the code reports as its training
loss), ``clean_loss`` with the clean term, and the size of the last forward's delta
(``perturbation_norm``, ``relative_perturbation``, per real token at the word embeddings) and
its cosine with the gradient of the step that made it (``ascent_cosine``; NaN for K = 1).
Cost: K forwards and K backwards (+1 of each with the clean term), one optimizer update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from siftkit.core.split import model_inputs
from siftkit.methods.embedding_attack import EmbeddingAttackMethod, RngReplay


class FreeLB(EmbeddingAttackMethod):
    """FreeLB: K ascent steps, the gradients of all K losses in one update."""

    name = "freelb"

    def train_batch(self, model, batch: Mapping[str, Any], ctx) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.active:
            return super().train_batch(model, batch, ctx)  # plain fine-tuning's batch, exactly
        s = self.settings
        k = s.adv_K
        split = self.split_for(model)
        labels = batch["labels"]
        parts: dict[str, float] = {}
        # The objective back-propagated (what the loop logs as the loss; NaN once a loss is not finite).
        total = torch.zeros((), device=batch["input_ids"].device)
        penalized = False
        finite = True

        if s.adv_clean_weight > 0:
            with ctx.autocast():
                clean = self.task_loss(model(**model_inputs(batch)).logits, labels)
                loss = self.with_penalties(s.adv_clean_weight * clean, parts)
            penalized = True
            parts["clean_loss"] = float(clean.detach())
            total = total + loss.detach().float()
            finite = ctx.backward(loss)

        with torch.no_grad():
            z = self.word_embeddings(split, batch)  # the start's shape, and the size's reference
        delta = self.start(z, batch)
        replay = RngReplay(z.device) if s.adv_sync_dropout and k > 1 else None
        step_losses: list[float] = []
        grad = None  # the gradient of the step that made the current delta
        for t in range(k if finite else 0):
            if replay is not None and t > 0:
                replay.restore()
            delta.requires_grad_(True)
            with ctx.autocast():
                task = self.task_loss(
                    self.perturbed_logits(split, batch, self.word_embeddings(split, batch), delta), labels
                )
                loss = task / k
                if not penalized:
                    loss = self.with_penalties(loss, parts)
                    penalized = True
            step_losses.append(float(task.detach()))
            total = total + loss.detach().float()
            if not ctx.backward(loss):
                break  # not finite: this batch's update is dropped; no gradient to ascend with
            if t == k - 1:
                break  # the last step does not move delta (run_glue_freelb.py)
            g = delta.grad.detach()
            if not bool(torch.isfinite(g).all()):
                # (an fp16 overflow) the update will be dropped; no NaN goes into delta
                self.skipped += 1
                break
            grad = g
            delta = self.step(delta.detach(), grad, batch)

        parts["task_loss"] = sum(step_losses) / len(step_losses) if step_losses else float("nan")
        parts.update(self.size_parts(z, delta.detach(), batch, grad))
        if ctx.update():
            self.after_update(model)
        return total, parts
