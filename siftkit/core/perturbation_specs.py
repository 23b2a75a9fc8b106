"""The adversarial regularizer's choices and what each perturbation rule takes; torch-free.

The one home of these facts: `siftkit.run.config` checks a configuration against them without
loading torch, `siftkit.core.rules` gives each rule class its properties from `RULE_SPECS`,
`siftkit.core.regularizers` and `siftkit.core.split` check their arguments with them, and the
explore layer orders its tables by `BLOCK_ORDER`. `check_rule_settings` is the one check of a
rule's norm and divergence, so a configuration and a regularizer built by hand refuse the same
settings with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

# Where SMART and SiFT perturb, inside the embedding block (siftkit.core.split); the default first.
PERTURB_POINTS = ("embedding_output", "word_embeddings", "pre_layernorm")
# The same points in the order the embedding block's forward meets them: W[ids], LayerNorm's input x, e.
BLOCK_ORDER = ("word_embeddings", "pre_layernorm", "embedding_output")
# Per-token norms of the ascent step and the ball: "inf" (max |.|) or "l2".
ADV_NORMS = ("inf", "l2")
# The divergences R may use (siftkit.core.divergences), the symmetric KL first.
DIVERGENCE_NAMES = ("sym_kl", "kl", "js", "mse")
# Guards 0/0 for a zero token norm or a constant token (a token std of 0); not epsilon.
TINY = 1e-12


@dataclass(frozen=True)
class RuleSpec:
    """What a perturbation rule (``adv_rule``) takes; `siftkit.core.rules` has its exact updates."""

    name: str
    source: str  # where the rule comes from
    has_ball: bool = False  # it projects onto a per-token ball of radius adv_epsilon (the others take none)
    inf_only: bool = False  # published with the per-token max only: adv_norm must be "inf"
    any_divergence: bool = False  # R may use any divergence; otherwise the rule's own loss forms (sym_kl only)
    trains_below: bool = True  # R's adversarial branch trains the layers below the perturbation point too


RULE_SPECS: dict[str, RuleSpec] = {
    spec.name: spec
    for spec in (
        RuleSpec(
            "projected",
            "the SMART paper's Algorithm 1 (Jiang et al. 2020); the default",
            has_ball=True,
            any_divergence=True,
        ),
        RuleSpec("mtdnn", "namisan/mt-dnn mt_dnn/perturbation.py (SmartPerturbation)"),
        RuleSpec(
            "deberta", "microsoft/DeBERTa DeBERTa/sift/sift.py (PerturbationLayer)", inf_only=True, trains_below=False
        ),
        RuleSpec("seed_code", "the seed paper's notebooks (wangluheng328/SiFT-Project)", inf_only=True),
    )
}
ADV_RULES = tuple(RULE_SPECS)


def rule_spec(name: str) -> RuleSpec:
    """The rule named `name`; a ValueError naming the choices otherwise."""
    if name not in RULE_SPECS:
        raise ValueError(f"adv_rule must be one of {', '.join(map(repr, ADV_RULES))}; got {name!r}")
    return RULE_SPECS[name]


def check_rule_settings(adv_rule: str, adv_norm: str, divergence: str) -> None:
    """Refuse a norm or a divergence the rule was not published with (each error names the knob)."""
    spec = rule_spec(adv_rule)
    if adv_norm not in ADV_NORMS:
        raise ValueError(f"adv_norm must be one of {', '.join(map(repr, ADV_NORMS))}; got {adv_norm!r}")
    if spec.inf_only and adv_norm != "inf":
        raise ValueError(
            f"adv_norm must be 'inf' for adv_rule={adv_rule!r} (it normalizes by each token's max "
            f"|.|), got {adv_norm!r}"
        )
    if not spec.any_divergence and divergence != "sym_kl":
        raise ValueError(
            f"divergence must stay 'sym_kl' for adv_rule={adv_rule!r} (the rule uses its own "
            f"published loss forms), got {divergence!r}"
        )
