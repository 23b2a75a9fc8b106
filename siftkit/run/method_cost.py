"""What one training batch of a method costs, beside plain's, in one process.

    from siftkit.run.method_cost import method_step_times, p2_tweets
    texts, labels = p2_tweets(5)
    method_step_times({"plain": {"algo": "plain"}, "freelb": {"algo": "freelb"}}, texts, labels)

Each variant gets its own copy of the same model (the offline MiniLM by default), its own AdamW
and the native loop's update (clip to 1.0, step, zero the gradients), and trains on the same
batch. The variants are interleaved step by step (plain, freelb, ..., plain, freelb, ...), so a
drift of the machine's load hits all of them alike; the first `warmup` rounds are not timed. A
step is the method's whole batch: its forwards, backwards and optimizer update(s) (FreeAT's
batch makes K updates). Also returned: the mean of the logged perturbation size and ascent
cosine over the timed steps.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from siftkit.run.config import RunConfig
from siftkit.run.objective import build_method


class _TimedUpdate:
    """The native loop's `BatchContext`, without its logging: backward, clip, AdamW, schedule-free."""

    def __init__(self, model, optimizer, max_grad_norm: float = 1.0):
        self.model, self.optimizer, self.max_grad_norm = model, optimizer, max_grad_norm
        self.updates = 0

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> bool:
        if not bool(torch.isfinite(loss.detach())):
            return False
        loss.backward()
        return True

    def update(self) -> bool:
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        return True


def p2_tweets(n: int = 5, data_dir=None, seed: int = 42) -> tuple[list[str], list[int]]:
    """The first `n` tweets (and labels) of P2's stage-1 training set as a run with `seed` draws it."""
    from siftkit.run.protocols import build_stages

    train = build_stages(RunConfig(task="twitter_to_uci", data_dir=data_dir, seed=seed))[0].train
    rows = train.select(range(n))
    return list(rows["text"]), [int(y) for y in rows["label"]]


def method_step_times(
    variants: Mapping[str, Mapping[str, Any]],
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    model_name: str | None = None,
    warmup: int = 3,
    steps: int = 10,
    learning_rate: float = 2e-5,
    max_length: int = 128,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per variant (a name -> RunConfig fields and method knobs, e.g. ``{"algo": "pgd", "adv_K": 3}``):
    ``mean_s`` and ``median_s`` of its timed steps, ``ratio_to_plain`` (needs a variant named
    "plain"), ``updates_per_batch``, and the means of ``relative_perturbation`` and
    ``ascent_cosine`` over the timed steps (NaN where not logged)."""
    from siftkit.run.models import load_model
    from siftkit.run.training import fused_adamw

    base, tokenizer = load_model(model_name, num_labels=2)
    batch = dict(tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
    batch["labels"] = torch.as_tensor(list(labels), dtype=torch.long)
    runs = {}
    for name, fields in variants.items():
        model = copy.deepcopy(base).train()
        cfg = RunConfig.from_dict(dict(fields))
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=learning_rate, **fused_adamw(torch.device("cpu"))
        )
        runs[name] = dict(
            model=model, method=build_method(model, cfg), ctx=_TimedUpdate(model, optimizer), times=[], rel=[], cos=[]
        )
    for step in range(warmup + steps):
        for run in runs.values():
            torch.manual_seed(seed * 1_000 + step)  # the same draws for every variant at this step
            start = time.perf_counter()
            _, parts = run["method"].train_batch(run["model"], batch, run["ctx"])
            elapsed = time.perf_counter() - start
            if step >= warmup:
                run["times"].append(elapsed)
                run["rel"].append(parts.get("relative_perturbation", math.nan))
                run["cos"].append(parts.get("ascent_cosine", math.nan))
    out = {}
    for name, run in runs.items():
        out[name] = {
            "mean_s": statistics.fmean(run["times"]),
            "median_s": statistics.median(run["times"]),
            "updates_per_batch": run["method"].updates_per_batch,
            "mean_relative_perturbation": _finite_mean(run["rel"]),
            "mean_ascent_cosine": _finite_mean(run["cos"]),
        }
    if "plain" in out:
        for row in out.values():
            row["ratio_to_plain"] = row["mean_s"] / out["plain"]["mean_s"]
    return out


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan
