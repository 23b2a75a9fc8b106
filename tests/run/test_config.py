"""RunConfig: documented defaults, validation naming the field, YAML loading, algo defaults."""

import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from siftkit.run.config import ALGO_DEFAULTS, RunConfig

SOURCE = (Path(__file__).resolve().parents[2] / "siftkit" / "run" / "config.py").read_text()


def test_every_field_has_a_default_and_a_help():
    for f in fields(RunConfig):
        assert f.default is not MISSING or f.default_factory is not MISSING, f.name
        # `name: type = knob(default, help, ...)`: the help is the field's documentation
        assert f.metadata.get("help", "").strip(), f"{f.name} has no help; make it with knob(default, help)"
        assert re.search(rf"^    {f.name}: .+ = knob\(", SOURCE, re.M), f"{f.name} is not made with knob"


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("algo", "smrt", "algo must be one of"),
        ("task", "mnli", "task must be one of"),
        ("perturb_at", "logits", "perturb_at must be one of"),
        ("divergence", "wasserstein", "divergence must be one of"),
        ("adv_norm", "l1", "adv_norm must be one of"),
        ("learning_rate", 0, "learning_rate must be"),
        ("learning_rate", -1e-5, "learning_rate must be"),
        ("per_device_train_batch_size", 0, "per_device_train_batch_size must be"),
        ("seed", -1, "seed must be"),
        ("twitter_val_fraction", 1.5, "twitter_val_fraction must be in (0, 1)"),
        ("bregman_beta", 1.0, "bregman_beta must be in [0, 1)"),
        ("mixed_precision", "fp8", "mixed_precision must be one of"),
        ("num_train_epochs", 1.5, "num_train_epochs must be of type int"),
        ("seed", "abc", "seed must be of type int"),
    ],
)
def test_bad_values_name_the_field(field, value, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        RunConfig(**{field: value})


@pytest.mark.parametrize(
    "field,value",
    [("adv_epsilon", 0.0), ("adv_epsilon", -1.0), ("adv_step_size", 0.0), ("adv_steps", -1), ("adv_noise_std", -0.1)],
)
@pytest.mark.parametrize("algo", ["smart", "sift"])
def test_regularizer_knobs_validated_for_regularized_algos(algo, field, value):
    with pytest.raises(ValueError, match=field):
        RunConfig(algo=algo, **{field: value})


def test_algo_defaults_resolve_and_explicit_values_win():
    for algo in ("smart", "sift"):
        cfg = RunConfig(algo=algo)
        for name, value in ALGO_DEFAULTS[algo].items():
            assert getattr(cfg, name) == value
    assert RunConfig(algo="sift", adv_epsilon=0.5).adv_epsilon == 0.5
    # switching algo re-derives the knobs that were defaults
    assert RunConfig(algo="smart").replace(algo="sift").adv_noise_std == ALGO_DEFAULTS["sift"]["adv_noise_std"]


def test_from_yaml_overrides_and_unknown_keys(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("algo: sift\nlearning_rate: 3.0e-5\nuci_train_size: 270\n")
    cfg = RunConfig.from_yaml(p, seed=7)
    assert (cfg.algo, cfg.learning_rate, cfg.uci_train_size, cfg.seed) == ("sift", 3e-5, 270, 7)
    p.write_text("algo: sift\nlearnig_rate: 1\n")
    with pytest.raises(ValueError, match="learnig_rate"):
        RunConfig.from_yaml(p)
    with pytest.raises(ValueError, match="not found"):
        RunConfig.from_yaml(tmp_path / "missing.yaml")
    p.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        RunConfig.from_yaml(p)


def test_strings_from_cli_are_coerced():
    cfg = RunConfig(seed="3", learning_rate="1e-4", overwrite="true", max_train_samples="none")
    assert (cfg.seed, cfg.learning_rate, cfg.overwrite, cfg.max_train_samples) == (3, 1e-4, True, None)


def test_committed_params_files_are_valid():
    for path in sorted((Path(__file__).resolve().parents[2] / "params").glob("*.yaml")):
        RunConfig.from_yaml(path)


def test_bregman_knobs_record_what_was_used():
    smart = RunConfig(algo="smart")
    assert (smart.bregman_weight, smart.bregman_beta) == (1.0, 0.99)
    assert RunConfig(algo="smart", bregman_weight=0.0).bregman_weight == 0.0
    for algo in ("plain", "sift"):  # no Bregman term: nothing to record
        cfg = RunConfig(algo=algo)
        assert (cfg.bregman_weight, cfg.bregman_beta) == (None, None)
        assert not cfg.uses_bregman
    # switching algorithm re-derives them both ways
    assert RunConfig(algo="smart").replace(algo="sift").bregman_weight is None
    assert RunConfig(algo="sift").replace(algo="smart").bregman_beta == 0.99
    with pytest.raises(ValueError, match="bregman_weight"):
        RunConfig(algo="smart", bregman_weight=-1.0)


def test_a_results_config_rebuilds_a_runconfig():
    # Round trip of what results.json records, and an older record of a SiFT run that
    # carried SMART's bregman_weight 1.0.
    for algo in ("plain", "smart", "sift"):
        cfg = RunConfig(algo=algo, seed=3)
        assert RunConfig.from_dict(cfg.to_dict()) == cfg
    old = dict(RunConfig(algo="sift").to_dict(), bregman_weight=1.0, bregman_beta=0.99)
    rebuilt = RunConfig.from_dict(old)
    assert rebuilt == RunConfig(algo="sift") and rebuilt.bregman_weight is None
