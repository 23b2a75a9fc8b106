"""The controls that explain a gain, and P2's validation split.

Each test checks the one thing the control promises: a frozen encoder does not move, a fresh
head changes the head and nothing else, `adv_stages=first` runs no adversarial forward in stage
2, L2-SP is zero at theta_0 with gradient 2 alpha (theta - theta_0), label smoothing reaches the
task loss, early stopping restores the best epoch, and the UCI validation sentences are disjoint
from training and test and the same for every algorithm.
"""

from __future__ import annotations

import pytest
import torch
from helpers import make_batch, robustness_log, tiny_model
from safetensors.torch import load_file

import siftkit.run.training as training
from siftkit.core.l2sp import L2SP
from siftkit.core.regularizers import AdversarialRegularizer
from siftkit.run.config import RunConfig
from siftkit.run.objective import AdversarialLoss
from siftkit.run.protocols import build_stages, uci_parts, uci_split
from siftkit.run.training import train

BASE = dict(
    task="twitter_to_uci",
    model_name="random:bert",
    max_train_samples=8,
    max_eval_samples=8,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    uci_num_train_epochs=2,
    learning_rate=1e-3,
    logging_steps=1,
    max_length=32,
    uci_val_size=40,
    seed=5,
    cpu=True,
)


def _cfg(**changes) -> RunConfig:
    return RunConfig(**{**BASE, **changes})


# ----------------------------------------------------------------------------- validation split


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 7])
def test_uci_validation_is_disjoint_and_the_same_for_every_algorithm(data_dir, seed):
    parts = {
        algo: uci_parts(RunConfig(algo=algo, seed=seed, uci_val_size=300, data_dir=str(data_dir)))
        for algo in ("plain", "smart", "sift")
    }
    train_, val, test = parts["plain"]
    assert (len(train_), len(val), len(test)) == (300, 300, 2400)
    # A partition of the pool (which repeats a few sentences, so compare counts, not sets).
    from collections import Counter

    from siftkit.data.loaders import load

    pool = load("uci_sentiment", data_dir)["pool"]
    rows = [Counter(zip(d["text"], d["source"])) for d in (train_, val, test)]
    assert rows[0] + rows[1] + rows[2] == Counter(zip(pool["text"], pool["source"]))
    for algo in ("smart", "sift"):
        assert [list(d["text"]) for d in parts[algo]] == [list(d["text"]) for d in parts["plain"]]
    # the training share is the paper's, whatever the validation size
    paper_train, paper_test = uci_split(RunConfig(seed=seed, data_dir=str(data_dir)))
    assert list(paper_train["text"]) == list(train_["text"]) and len(paper_test) == 2700


@pytest.mark.slow
def test_validation_is_evaluated_after_every_stage2_epoch(tmp_path):
    record = train(_cfg(algo="plain", uci_num_train_epochs=3, output_dir=str(tmp_path / "r")), progress=False)
    rows = record["val_history"]
    assert [(r["stage"], r["epoch"]) for r in rows] == [("uci", 0), ("uci", 1), ("uci", 2)]  # twitter: 1 epoch
    assert all(0 <= r["uci_val_accuracy"] <= 1 for r in rows)
    assert rows[-1]["uci_val_accuracy"] == record["metrics"]["uci_val_accuracy"]
    assert "uci_test_accuracy" in record["metrics"] and record["stages"][1]["val"] == "uci_val_accuracy"


# ----------------------------------------------------------------------------- freeze, reinit, adv_stages


@pytest.mark.slow
def test_freeze_encoder_leaves_every_encoder_weight_bit_identical(tmp_path):
    from accelerate.utils import set_seed

    from siftkit.run.models import load_model

    train(_cfg(algo="sift", freeze_encoder=True, save_model=True, output_dir=str(tmp_path / "r")), progress=False)
    set_seed(BASE["seed"])
    start, _ = load_model("random:bert", num_labels=2)  # the same seeded initialisation as the run's
    after = load_file(str(tmp_path / "r" / "model" / "model.safetensors"))
    before = start.state_dict()
    encoder = [k for k in before if k.startswith(start.base_model_prefix + ".")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


@pytest.mark.slow
def test_reinit_head_changes_the_head_and_nothing_else_at_the_stage_boundary(tmp_path, monkeypatch):
    calls = []
    real = training.reinit_head

    def spy(model):
        before = {k: v.clone() for k, v in training.unwrap(model).state_dict().items()}
        real(model)
        after = training.unwrap(model).state_dict()
        calls.append({k for k in before if not torch.equal(before[k], after[k])})

    monkeypatch.setattr(training, "reinit_head", spy)
    train(_cfg(algo="plain", reinit_head=True, output_dir=str(tmp_path / "r")), progress=False)
    assert calls == [{"classifier.weight", "classifier.bias"}]  # once, before stage 2


def test_reinit_head_resets_a_trained_bias_too():
    model = tiny_model()
    with torch.no_grad():
        model.classifier.bias.fill_(0.5)
        encoder = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    training.reinit_head(model)
    assert torch.equal(model.classifier.bias, torch.zeros_like(model.classifier.bias))
    assert all(torch.equal(v, model.base_model.state_dict()[k]) for k, v in encoder.items())


@pytest.mark.slow
@pytest.mark.parametrize("which, active", [("first", ("twitter",)), ("last", ("uci",)), ("all", ("twitter", "uci"))])
def test_adv_stages_runs_the_regularizer_only_where_asked(tmp_path, monkeypatch, which, active):
    seen = []
    real = AdversarialRegularizer.forward

    def counting(self, *args, **kwargs):
        seen.append(current["stage"])
        return real(self, *args, **kwargs)

    current = {"stage": None}
    real_stage = training._run_stage

    def tracking(stage_index, stage, *args, **kwargs):
        current["stage"] = stage.name
        return real_stage(stage_index, stage, *args, **kwargs)

    monkeypatch.setattr(AdversarialRegularizer, "forward", counting)
    monkeypatch.setattr(training, "_run_stage", tracking)
    record = train(_cfg(algo="smart", adv_stages=which, output_dir=str(tmp_path / "r")), progress=False)
    assert set(seen) == set(active)
    for row in record["history"]:
        assert (row["adv_loss"] > 0) == (row["stage"] in active), row
        assert (row["bregman_loss"] > 0) == (row["stage"] in active), row
    # the run's measured size is the push's size where it acted, not diluted by the zeros elsewhere
    acting = [row["relative_perturbation"] for row in record["history"] if row["stage"] in active]
    assert record["metrics"]["mean_relative_perturbation"] == pytest.approx(sum(acting) / len(acting))
    assert record["metrics"]["mean_relative_perturbation"] > 0


# ----------------------------------------------------------------------------- L2-SP, label smoothing


def test_l2sp_is_zero_at_theta0_and_its_gradient_is_2_alpha_delta():
    model = tiny_model(train=True)
    penalty = L2SP(model)
    assert float(penalty()) == 0.0
    alpha = 0.3
    with torch.no_grad():
        moved = {n: torch.randn_like(p) * 1e-2 for n, p in model.base_model.named_parameters()}
        for n, p in model.base_model.named_parameters():
            p.add_(moved[n])
        model.classifier.weight.add_(1.0)  # the head is not part of L2-SP
    model.zero_grad()
    (alpha * penalty()).backward()
    for n, p in model.base_model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * alpha * moved[n], rtol=1e-4, atol=1e-7)
    assert model.classifier.weight.grad is None
    expected = sum(float(d.double().pow(2).sum()) for d in moved.values())
    assert float(penalty()) == pytest.approx(expected, rel=1e-4)


def test_l2sp_and_label_smoothing_reach_the_loss():
    model = tiny_model(train=False)
    batch = make_batch(labels=[0, 1, 1])
    plain = AdversarialLoss(model, RunConfig(algo="plain"))(model, batch)[0]
    smooth_loss, parts = AdversarialLoss(model, RunConfig(algo="plain", label_smoothing=0.2))(model, batch)
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    expected = torch.nn.functional.cross_entropy(logits.float(), batch["labels"], label_smoothing=0.2)
    torch.testing.assert_close(smooth_loss, expected)
    assert float(smooth_loss) != pytest.approx(float(plain))
    objective = AdversarialLoss(model, RunConfig(algo="plain", l2sp_weight=2.0))
    with torch.no_grad():
        next(model.base_model.parameters()).add_(0.1)
    loss, parts = objective(model, batch)
    assert parts["l2sp_loss"] > 0
    torch.testing.assert_close(loss, objective(model, batch)[0])


# ----------------------------------------------------------------------------- early stopping


@pytest.mark.slow
def test_early_stopping_restores_the_best_epoch(tmp_path, monkeypatch):
    """Scripted validation scores 0.5, 0.8, 0.6, 0.6 with patience 2: stop after the fourth
    epoch (of six) and end with the second epoch's weights."""
    scores = iter([0.5, 0.8, 0.6, 0.6])
    snapshots = []
    real = training.evaluate

    def scripted(model, evals, tokenizer, cfg, accelerator, *, smoothness=None):
        metrics = real(model, evals, tokenizer, cfg, accelerator, smoothness=smoothness)
        if smoothness is False and "uci_val" in evals:
            snapshots.append({k: v.clone() for k, v in training.unwrap(model).state_dict().items()})
            metrics["uci_val_accuracy"] = next(scores)
        return metrics

    monkeypatch.setattr(training, "evaluate", scripted)
    record = train(
        _cfg(
            algo="plain",
            uci_num_train_epochs=6,
            early_stopping_patience=2,
            learning_rate=5e-3,
            save_model=True,
            output_dir=str(tmp_path / "r"),
        ),
        progress=False,
    )
    uci = record["stages"][1]
    assert (uci["epochs_run"], uci["best_epoch"]) == (4, 1)
    assert len(snapshots) == 4 and not torch.equal(snapshots[1]["classifier.weight"], snapshots[3]["classifier.weight"])
    saved = load_file(str(tmp_path / "r" / "model" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in snapshots[1].items() if k in saved)
    steps = [r for r in record["history"] if r.get("stage") == "uci"]
    assert len(steps) == 4 * 2  # 4 epochs of 2 steps, logged every step


# ----------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(algo="plain", adv_stages="last"), "adv_stages='last' chooses the stages"),
        (dict(algo="sift", adv_stages="middle"), "adv_stages must be one of"),
        (dict(task="cola", algo="sift", adv_stages="first"), "needs a protocol with several stages"),
        (dict(task="cola", reinit_head=True), "reinit_head re-initialises the head before a later stage"),
        (dict(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
        (dict(label_smoothing=-0.1), r"label_smoothing must be in \[0, 1\)"),
        (dict(l2sp_weight=-1), "l2sp_weight must be a finite number >= 0"),
        (dict(l2sp_weight=float("inf")), "l2sp_weight must be a finite number >= 0"),
        (dict(freeze_encoder=True, l2sp_weight=0.01), "freeze_encoder=True keeps it there"),
        (dict(early_stopping_patience=0, uci_val_size=300), "early_stopping_patience must be a finite number > 0"),
        (dict(early_stopping_patience=2), "P2's UCI stage has none with uci_val_size=0"),
        (dict(uci_val_size=-5), "uci_val_size must be a finite number >= 0"),
        (dict(task="cola", uci_val_size=300), "uci_val_size=300 holds out UCI sentences of P2"),
        (dict(stage_cache_dir=" "), "stage_cache_dir is empty"),
        (dict(reinit_head="maybe"), "reinit_head must be of type bool"),
        (dict(freeze_encoder="half"), "freeze_encoder must be of type bool"),
        (dict(early_stopping_patience=1.5, uci_val_size=300), "early_stopping_patience must be of type int"),
    ],
)
def test_bad_control_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        RunConfig(**kwargs)
    robustness_log("RunConfig(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")", str(info.value))


@pytest.mark.slow
def test_a_validation_size_that_leaves_no_test_set_names_both_fields(data_dir):
    with pytest.raises(ValueError, match="uci_val_size=2700 leaves 0 of the 3000 UCI sentences") as info:
        build_stages(RunConfig(uci_val_size=2700, data_dir=str(data_dir)))
    robustness_log("uci_val_size=2700 (with the default training share of 300)", str(info.value))


# ----------------------------------------------------------------------------- matched-size noise


def test_matched_noise_reaches_the_ascents_size_and_says_when_it_cannot():
    from siftkit.core.split import EmbeddingSplit
    from siftkit.run.calibration import matched_noise_std, measured_size

    model = tiny_model()
    split, batch = EmbeddingSplit(model), make_batch()
    ascent = RunConfig(algo="sift", adv_epsilon=0.3, adv_noise_std=0.3, adv_step_size=30)
    target = measured_size(split, batch, ascent)
    same_std = measured_size(split, batch, ascent.replace(adv_steps=0, adv_noise_std=0.3, adv_epsilon=0.3))
    assert same_std < 0.9 * target  # noise at sigma = epsilon fills less of the ball than the ascent
    std, size = matched_noise_std(split, batch, ascent, target)
    assert std > 0.3 and size == pytest.approx(target, rel=0.01)
    noise = ascent.replace(adv_steps=0, adv_noise_std=std, adv_epsilon=0.3)
    assert measured_size(split, batch, noise) == pytest.approx(size)
    with pytest.raises(ValueError, match="beyond what noise inside adv_epsilon=0.3 can reach"):
        matched_noise_std(split, batch, ascent, 3 * target)


@pytest.mark.slow
def test_every_stage_trains_with_adamws_fused_kernel(tmp_path, monkeypatch):
    built = []
    real = torch.optim.AdamW

    def spy(params, **kwargs):
        built.append(kwargs)
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    train(_cfg(algo="plain", output_dir=str(tmp_path / "r")), progress=False)
    assert [k.get("fused") for k in built] == [True, True]  # one optimizer per stage
