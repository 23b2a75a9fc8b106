"""00_tour's family panel: each input-perturbing method's push on one sentence, measured per token."""

from __future__ import annotations

import torch
from helpers import tiny_model, tokenizer

from siftkit.explore.pushes import input_perturbing, method_pushes


def test_each_method_push_is_measured_per_real_token_without_moving_weights():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frame = method_pushes(model, tokenizer(), "a text of middle length here")
    assert set(frame["algo"]) == set(input_perturbing())
    n_tokens = len(tokenizer()("a text of middle length here")["input_ids"])
    assert (frame.groupby("algo").size() == n_tokens).all()
    assert (frame["relative"] > 0).all() and (frame["divergence"] >= 0).all()
    # SiFT's push is a fixed share of each token's sigma, about 1e-2 of the norm at its defaults;
    # SMART's raw 1e-5 radius is orders of magnitude smaller on this model's unit-scale tokens.
    med = frame.groupby("algo")["relative"].median()
    assert med["sift"] > 100 * med["smart"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_knobs_replace_a_method_defaults():
    model = tiny_model()
    small = method_pushes(model, tokenizer(), "a short one", ["sift"])
    big = method_pushes(
        model, tokenizer(), "a short one", ["sift"], knobs={"sift": {"adv_epsilon": 0.1, "adv_noise_std": 0.1}}
    )
    assert big["relative"].median() > 5 * small["relative"].median()
