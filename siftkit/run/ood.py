"""The out-of-domain fine-tuning methods around the training loop, for every algorithm:
LP-FT's head-only phase and WiSE-FT's weight-space ensemble after training (re-initialised top
layers and layer-wise decay live in `siftkit.core.layers`; docs/methods/ood.md has all four).

**LP-FT** (Kumar et al., ICLR 2022): at the start of each stage of ``lp_ft_stages`` the head
trains alone for ``lp_ft_epochs`` at ``lp_ft_learning_rate`` (its own AdamW and linear schedule),
the encoder frozen and in eval mode, as the official codes extract the features they probe
(AnanyaKumar/transfer_learning ``use_net_val_mode``); then the stage fine-tunes everything from
the probed head, as plain fine-tuning would from any head. The probe is plain fine-tuning of the
head: the run's method is inactive in it (its batch is plain's), and starts anew after it, as
after a fresh head. The official codes fit an L2-regularised logistic regression to the frozen
features instead (scikit-learn, to convergence); here the probe is gradient epochs, so its
length and rate are settings of their own.

**WiSE-FT** (Wortsman et al., CVPR 2022): see `siftkit.core.weight_space` and `wise_ft`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

from siftkit.core import weight_space
from siftkit.core.split import unwrap
from siftkit.data.stages import Stage
from siftkit.run.config import RunConfig
from siftkit.run.evaluation import evaluate

# History rows and validation rows of the head-only phase carry the stage's name with this suffix.
PROBE_SUFFIX = "_probe"
# The probe's data order is its own permutation stream, (seed, this + stage, epoch): not the full phase's.
PROBE_ORDER = 1_000


def probe_stage(stage: Stage, cfg: RunConfig) -> Stage:
    """The head-only phase of `stage`: its data and validation set, LP-FT's epochs and rate."""
    return dataclasses.replace(
        stage, name=stage.name + PROBE_SUFFIX, num_train_epochs=cfg.lp_ft_epochs, learning_rate=cfg.lp_ft_learning_rate
    )


@contextlib.contextmanager
def head_only(model) -> Iterator[None]:
    """The encoder (``base_model``) frozen while inside: no gradient reaches it, the optimizer built
    inside holds only the head, so every encoder weight stays bit-identical. Restored on exit."""
    base = unwrap(model).base_model
    before = [(p, p.requires_grad) for p in base.parameters()]
    for p, _ in before:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in before:
            p.requires_grad_(flag)


def features_as_evaluated(model) -> None:
    """The encoder in eval mode (no dropout): the features the probe fits are the evaluated ones."""
    unwrap(model).base_model.eval()


def wise_ft(
    model,
    stage: Stage,
    theta_0: dict[str, torch.Tensor],
    tokenizer,
    cfg: RunConfig,
    accelerator,
    finetuned: dict[str, float],
    report: Callable[[str], None] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """WiSE-FT after training: every alpha of ``cfg.wise_ft_alphas`` evaluated on the last stage's
    evaluation sets, alpha chosen on its validation metric, the model left at the chosen alpha.

    `finetuned`: the last stage's metrics as evaluated at its end (alpha = 1, the fine-tuned model
    itself). Returns (the last stage's metrics at the chosen alpha, with ``wise_ft_alpha``; the
    record's ``wise_ft`` block: scope, alphas, select_on, the chosen alpha, the curve of accuracy
    and MCC per alpha, and ``finetuned``). The curve's test columns are there to be drawn; only
    ``select_on`` chooses (`siftkit.core.weight_space.choose_alpha`). `report` gets one line per alpha.
    """
    select_on = stage.val_key
    theta_1 = weight_space.snapshot(model, list(theta_0))
    curve = []
    for alpha in cfg.wise_ft_alphas:
        # alpha = 1 is evaluated too (theta_1 itself): its row must equal the fine-tuned metrics.
        weight_space.load_entries(model, weight_space.interpolate(theta_0, theta_1, alpha))
        curve.append({"alpha": alpha, **evaluate(model, stage.evals, tokenizer, cfg, accelerator, smoothness=False)})
        if report is not None:
            report(
                f"WiSE-FT alpha {alpha:g} ({len(curve)}/{len(cfg.wise_ft_alphas)}): {select_on} "
                f"{curve[-1].get(select_on, float('nan')):.4f}"
            )
    chosen = weight_space.choose_alpha(curve, select_on)
    if chosen == 1.0:
        weight_space.load_entries(model, theta_1)
        metrics = dict(finetuned)
    else:
        weight_space.load_entries(model, weight_space.interpolate(theta_0, theta_1, chosen))
        metrics = evaluate(model, stage.evals, tokenizer, cfg, accelerator)
    metrics["wise_ft_alpha"] = chosen
    block = {
        "scope": cfg.wise_ft_scope,
        "alphas": list(cfg.wise_ft_alphas),
        "select_on": select_on,
        "alpha": chosen,
        "curve": curve,
        "finetuned": dict(finetuned),
    }
    return metrics, block
