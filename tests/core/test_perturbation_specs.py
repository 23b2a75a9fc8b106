"""One home for the regularizer's names and each rule's properties (siftkit.core.perturbation_specs):
torch-free, read by the config, the rules, the regularizer and the split, and the config's checks
refuse exactly what the regularizer refuses."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from siftkit.core import perturbation_specs as specs
from siftkit.run import config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.subprocess
def test_the_specs_and_the_config_load_without_torch():
    code = "import sys\nimport siftkit.core.perturbation_specs, siftkit.run.config\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_reader_uses_the_one_home():
    from siftkit.core import divergences, rules, split
    from siftkit.explore import analysis, plotting

    assert config.PERTURB_POINTS is specs.PERTURB_POINTS is split.PERTURB_POINTS
    assert config.ADV_RULES is specs.ADV_RULES and config.ADV_NORMS is specs.ADV_NORMS
    assert analysis.BLOCK_ORDER is plotting.BLOCK_ORDER is specs.BLOCK_ORDER
    assert sorted(specs.BLOCK_ORDER) == sorted(specs.PERTURB_POINTS)
    assert tuple(divergences.DIVERGENCES) == specs.DIVERGENCE_NAMES == config.DIVERGENCE_NAMES
    assert tuple(rules.RULES) == specs.ADV_RULES  # every spec has its rule class, in the same order
    for name, cls in rules.RULES.items():
        spec = specs.RULE_SPECS[name]
        assert (cls.has_ball, cls.inf_only, cls.any_divergence, cls.trains_below) == (
            spec.has_ball,
            spec.inf_only,
            spec.any_divergence,
            spec.trains_below,
        ), name


@pytest.mark.parametrize("rule", specs.ADV_RULES)
def test_the_published_defaults_have_an_epsilon_exactly_where_the_rule_has_a_ball(rule):
    for algo, defaults in config.RULE_DEFAULTS[rule].items():
        assert (defaults["adv_epsilon"] is not None) == specs.RULE_SPECS[rule].has_ball, (rule, algo)


def _outcome(build):
    try:
        build()
    except ValueError as exc:
        return str(exc)
    return None


CASES = list(
    itertools.product(specs.ADV_RULES, specs.ADV_NORMS, specs.DIVERGENCE_NAMES, ("smart", "sift"), specs.PERTURB_POINTS)
)


@pytest.mark.parametrize("rule,norm,divergence,algo,at", CASES)
def test_config_refuses_exactly_what_the_regularizer_refuses(rule, norm, divergence, algo, at):
    from siftkit.core.regularizers import REGULARIZERS

    settings = dict(adv_rule=rule, adv_norm=norm, divergence=divergence, perturb_at=at)
    by_config = _outcome(lambda: config.RunConfig(algo=algo, **settings))
    amounts = config.RULE_DEFAULTS[rule][algo]  # what the config resolves the unset amounts to
    by_regularizer = _outcome(lambda: REGULARIZERS[algo](adv_steps=1, **amounts, **settings))
    assert by_config == by_regularizer
    published = specs.RULE_SPECS[rule]
    assert (by_config is None) == (
        (norm == "inf" or not published.inf_only) and (divergence == "sym_kl" or published.any_divergence)
    )


def test_a_refusal_names_the_knob_and_the_rule():
    with pytest.raises(ValueError, match=r"adv_norm must be 'inf' for adv_rule='seed_code' \(it normalizes"):
        specs.check_rule_settings("seed_code", "l2", "sym_kl")
    with pytest.raises(ValueError, match="divergence must stay 'sym_kl' for adv_rule='deberta'"):
        specs.check_rule_settings("deberta", "inf", "js")
    with pytest.raises(ValueError, match="adv_rule must be one of 'projected', 'mtdnn', 'deberta', 'seed_code'"):
        specs.rule_spec("pgd")


@pytest.mark.parametrize("algo", ("smart", "sift"))
@pytest.mark.parametrize("rule", specs.ADV_RULES)
def test_config_and_regularizer_take_an_epsilon_for_the_same_rules(rule, algo):
    from siftkit.core.regularizers import REGULARIZERS

    amounts = {k: v for k, v in config.RULE_DEFAULTS[rule][algo].items() if k != "adv_epsilon"}
    by_config = _outcome(lambda: config.RunConfig(algo=algo, adv_rule=rule, adv_epsilon=0.1))
    by_regularizer = _outcome(lambda: REGULARIZERS[algo](adv_rule=rule, adv_epsilon=0.1, **amounts))
    assert (by_config is None) == (by_regularizer is None) == specs.RULE_SPECS[rule].has_ball
