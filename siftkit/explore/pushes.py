"""Every input-perturbing method's push on one sentence, token by token (00_tour's family panel).

Each method runs one training batch of the sentence exactly as in training (its own forwards,
ascent steps and backwards; `siftkit.methods.base.MeasureContext`, so no weight moves), at its
published defaults or the knobs given, in eval mode (no dropout: the methods differ only by their
push). Its label is the model's own prediction on the clean sentence, so "adversarial" means
"against what the model now says". What each method keeps of its push (`Method.last_push`) is
then measured per real token: ‖Δ_t‖₂, ‖Δ_t‖₂/‖z_t‖₂ at the method's own point, and, per
sentence, the symmetric KL between the clean and the pushed prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from siftkit import methods
from siftkit.core.divergences import symmetric_kl
from siftkit.core.perturbation_specs import TINY
from siftkit.core.split import EmbeddingSplit
from siftkit.methods.base import MeasureContext
from siftkit.run.config import RunConfig
from siftkit.run.objective import build_method


def input_perturbing(algos: Sequence[str] | None = None) -> list[str]:
    """The registered methods whose training batch pushes an input (all of them if `algos` is None)."""
    names = list(algos) if algos is not None else list(methods.names())
    return [a for a in names if a != "plain" and a != "rdrop"]


def method_pushes(
    model,
    tokenizer,
    sentence: str,
    algos: Sequence[str] | None = None,
    *,
    max_length: int = 128,
    seed: int = 0,
    knobs: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """One row per (method, real token): ``algo``, ``point``, ``position``, ``token``,
    ``perturbation_norm``, ``relative`` and the sentence's ``divergence`` (sym KL, nats).

    `knobs`: per algo, settings that replace its defaults (``{"freelb": {"adv_K": 2}}``). A method
    that keeps no push for this batch (a skipped, non-finite ascent) is left out.
    """
    enc = tokenizer([sentence], truncation=True, max_length=max_length, return_tensors="pt")
    batch = {k: v for k, v in enc.items()}
    rows = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            clean = model(**batch).logits
        batch["labels"] = clean.argmax(-1)
        tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
        for algo in input_perturbing(algos):
            cfg = RunConfig.from_dict({"algo": algo, **(knobs or {}).get(algo, {})})
            method = build_method(model, cfg)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                method.train_batch(model, batch, MeasureContext(model))
            push = method.last_push
            if push is None:
                continue
            with torch.no_grad():
                pushed = EmbeddingSplit(model).forward_from(
                    push.z + push.perturbation.to(push.z.dtype), batch, cfg.perturb_at
                )
                divergence = float(symmetric_kl(pushed, clean))
            size = push.perturbation.float().norm(dim=-1)[0]
            relative = size / push.z.float().norm(dim=-1)[0].clamp_min(TINY)
            for t, (tok, real) in enumerate(zip(tokens, push.mask[0].tolist())):
                if real:
                    rows.append(
                        {
                            "algo": algo,
                            "point": cfg.perturb_at,
                            "position": t,
                            "token": tok,
                            "perturbation_norm": float(size[t]),
                            "relative": float(relative[t]),
                            "divergence": divergence,
                        }
                    )
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return pd.DataFrame(rows)


def family_sentence(table: pd.DataFrame) -> str:
    """What the family table says, from its own numbers: the smallest and the largest push, and
    how far apart they are (``table``: one row per method with ``median_relative``)."""
    if table.empty:
        return "No method pushed an input."
    rows = table.sort_values("median_relative")
    low, high = rows.iloc[0], rows.iloc[-1]
    ratio = high["median_relative"] / low["median_relative"] if low["median_relative"] > 0 else float("inf")
    return (
        f"At their published defaults the pushes span a factor of {ratio:,.0f}: from {low['algo']} "
        f"({low['median_relative']:.1e} of a token's norm) to {high['algo']} ({high['median_relative']:.1e}). "
        f"Defaults are not a common scale: compare methods at a tuned strength, or at a matched measured size."
    )
