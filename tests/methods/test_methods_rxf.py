"""R3F/R4F (fairseq examples/rxf) and VAT (tensorflow/models research/adversarial_text).

Each formula against a re-derivation written here from the official code's description (through
the model's own ``inputs_embeds``, not the kit's split hooks), in float64 where rounding would
blur the comparison; the invariants (weight 0 is plain fine-tuning, bit for bit); R4F's
spectral norm through everything that saves or loads weights (checkpoints and resume, the stage
cache, ``adv_stages``, ``save_model``, ``reinit_head``, evaluation); bad values; short runs
through the native loop and through `AdversarialTrainer`.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TEXTS, make_batch, robustness_log, tiny_model, tokenizer

import siftkit.run.training as training
from siftkit import methods
from siftkit.core import spectral_norm
from siftkit.core.divergences import symmetric_kl
from siftkit.core.split import UnsupportedModelError
from siftkit.methods.r3f.method import r3f_noise
from siftkit.methods.vat.method import probe_mask, scale_l2
from siftkit.run.checkpoint import latest_checkpoint
from siftkit.run.config import RunConfig
from siftkit.run.objective import build_method
from siftkit.run.training import train

REPO = Path(__file__).resolve().parents[2]
R4F = {"spectral_norm_classification_head": True}


def _method(model, algo: str, **knobs):
    return build_method(model, RunConfig.from_dict({"algo": algo, **knobs}))


def _inputs(batch):
    return {k: v for k, v in batch.items() if k not in ("input_ids", "labels")}


def _sigma_max(weight: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(weight.detach().double(), ord=2))


# ------------------------------------------------------------------------------ R3F: noise


@pytest.mark.parametrize("noise_type, std_factor", [("uniform", 1 / math.sqrt(3)), ("normal", 1.0)])
def test_r3f_noise_law(noise_type, std_factor):
    eps = 1e-5
    torch.manual_seed(0)
    noise = r3f_noise(torch.zeros(64, 32, 64), eps, noise_type)
    assert noise.dtype == torch.float32
    assert abs(float(noise.mean())) < 0.02 * eps
    assert float(noise.std()) == pytest.approx(std_factor * eps, rel=0.01)
    if noise_type == "uniform":
        assert float(noise.abs().max()) <= eps and float(noise.abs().max()) > 0.999 * eps
    else:
        assert float(noise.abs().max()) > 4 * eps  # unbounded, unlike U(-eps, eps)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_r3f_noise_on_padding_follows_mask_padding(mask_padding):
    batch = make_batch(labels=[0, 1, 1])
    model = tiny_model("bert")
    method = _method(model, "r3f", eps=1e-3, mask_padding=mask_padding)
    method.loss(model, batch)
    noise = method.last_perturbation
    pad = ~batch["attention_mask"].bool()
    assert pad.any()
    assert bool((noise[~pad] != 0).all())
    # The official code has no padding mask: noise at every position unless asked.
    assert bool((noise[pad] == 0).all()) == mask_padding
    assert bool((noise[pad] != 0).all()) == (not mask_padding)


# ------------------------------------------------------------------------------ R3F: loss


def _fairseq_symm_kl(noised: torch.Tensor, clean: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """sentence_prediction_r3f.py's _get_symm_kl as its text reads: two kl_div sums over the
    batch (and classes), divided by the batch size (float32 there; float64 for a float64 check)."""
    b = noised.size(0)
    first = F.kl_div(F.log_softmax(noised, -1, dtype=dtype), F.softmax(clean, -1, dtype=dtype), reduction="sum")
    second = F.kl_div(F.log_softmax(clean, -1, dtype=dtype), F.softmax(noised, -1, dtype=dtype), reduction="sum")
    return (first + second) / b


def test_symmetric_kl_is_fairseqs_with_gradients_into_both_sides():
    torch.manual_seed(1)
    a = torch.randn(6, 3, requires_grad=True)
    b = torch.randn(6, 3, requires_grad=True)
    ours = symmetric_kl(a, b)
    ga, gb = torch.autograd.grad(ours, (a, b))
    ref = _fairseq_symm_kl(a, b)
    ra, rb = torch.autograd.grad(ref, (a, b))
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    assert torch.allclose(ga, ra, atol=1e-6) and torch.allclose(gb, rb, atol=1e-6)
    assert float(gb.abs().max()) > 1e-3  # the clean side learns too


def test_r3f_loss_and_gradients_match_a_rederivation():
    """CE + lambda * symKL(f(e.detach() + noise), f(e)), re-derived through inputs_embeds: same
    loss and the same gradient for every weight (the word-embedding table gets none from the
    noised branch)."""
    batch = make_batch(labels=[0, 1, 1])
    model = tiny_model("bert", seed=2, dtype=torch.float64)  # eval: no dropout
    twin = copy.deepcopy(model)
    method = _method(model, "r3f", eps=0.05, r3f_lambda=3.0, noise_type="normal")
    torch.manual_seed(5)
    loss, parts = method.loss(model, batch)
    loss.backward()
    noise = method.last_perturbation

    e = twin.bert.embeddings.word_embeddings(batch["input_ids"])
    clean = twin(inputs_embeds=e, **_inputs(batch)).logits
    noised = twin(inputs_embeds=e.detach() + noise, **_inputs(batch)).logits
    symm = _fairseq_symm_kl(noised, clean, torch.float64)
    # the kit's task loss is cross-entropy in float32 (Method.task_loss), whatever the model's dtype
    ref = F.cross_entropy(clean.float(), batch["labels"]) + 3.0 * symm
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    assert parts["adv_loss"] == pytest.approx(float(symm.detach()), rel=1e-12)
    assert parts["reg_loss"] == pytest.approx(3.0 * float(symm.detach()), rel=1e-12)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-14), name
    # the check has teeth: the noised branch alone moves the table when not detached
    twin.zero_grad()
    e = twin.bert.embeddings.word_embeddings(batch["input_ids"])
    twin(inputs_embeds=e + noise, **_inputs(batch)).logits.sum().backward()
    assert float(twin.bert.embeddings.word_embeddings.weight.grad.abs().max()) > 0


def test_r3f_logs_its_measured_push():
    batch = make_batch(labels=[0, 1, 1])
    model = tiny_model("bert")
    method = _method(model, "r3f")
    _, parts = method.loss(model, batch)
    z = model.bert.embeddings.word_embeddings(batch["input_ids"])
    real = batch["attention_mask"].bool()
    rel = (method.last_perturbation.norm(dim=-1) / z.norm(dim=-1))[real].mean()
    assert parts["relative_perturbation"] == pytest.approx(float(rel.detach()), rel=1e-5)
    assert set(parts) == {"task_loss", "adv_loss", "reg_loss", "perturbation_norm", "relative_perturbation"}


@pytest.mark.parametrize("algo, zero", [("r3f", {"r3f_lambda": 0.0}), ("vat", {"adv_reg_coeff": 0.0})])
def test_weight_zero_gives_plains_weights_bit_for_bit(algo, zero):
    """Dropout off: with its term weighted 0 the method's step is plain fine-tuning's, exactly
    (its extra forwards run and add exact zeros)."""
    batch = make_batch(labels=[0, 1, 1])
    models = {}
    for name, cfg in (("plain", RunConfig(algo="plain")), (algo, RunConfig.from_dict({"algo": algo, **zero}))):
        model = tiny_model("bert", seed=4)  # eval mode: no dropout
        method = build_method(model, cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss, parts = method.objective(model, batch)
        loss.backward()
        optimizer.step()
        models[name] = model
        if name != "plain":
            assert parts["reg_loss"] == 0.0 and parts["adv_loss"] > 0
    for (name, p), q in zip(models["plain"].state_dict().items(), models[algo].state_dict().values()):
        assert torch.equal(p, q), name


# ------------------------------------------------------------------------------ VAT


def test_probe_mask_drops_each_examples_last_real_token():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert probe_mask(right).int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert probe_mask(left).int().tolist() == [[0, 1, 1, 0], [0, 0, 1, 0]]


def test_scale_l2_gives_each_example_the_norm():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4) * torch.tensor([1e-6, 1.0, 1e20]).view(3, 1, 1)
    y = scale_l2(x, 2.5)
    assert torch.allclose(y.flatten(1).norm(dim=1), torch.full((3,), 2.5), rtol=1e-5)
    x64 = x.double()
    assert torch.allclose(y.double() / 2.5, x64 / x64.flatten(1).norm(dim=1).view(3, 1, 1), rtol=1e-5, atol=1e-7)
    assert torch.equal(scale_l2(torch.zeros(1, 2, 2), 1.0), torch.zeros(1, 2, 2))
    # as the official _scale_l2: below max|x| ~ 1e-12 its guard dominates and the norm shrinks
    assert float(scale_l2(torch.full((1, 2, 2), 1e-20), 1.0).norm()) < 1e-3


def _vat_rederived(model, batch, target, seed, xi, eps, iterations):
    """The official virtual_adversarial_loss's direction, as its text reads, via inputs_embeds."""
    ids, real = batch["input_ids"], batch["attention_mask"]
    e = model.bert.embeddings.word_embeddings(ids).detach()
    probes = torch.zeros_like(real)
    for i, n in enumerate(real.sum(1).tolist()):
        probes[i, : n - 1] = 1  # sequence_mask(length - 1)
    torch.manual_seed(seed)
    d = torch.randn(e.shape, dtype=e.dtype)
    for _ in range(iterations):
        d = d * probes.unsqueeze(-1)
        d = (xi * d / d.flatten(1).norm(dim=1).view(-1, 1, 1)).requires_grad_(True)
        log_p = F.log_softmax(target, -1)
        log_q = F.log_softmax(model(inputs_embeds=e + d, **_inputs(batch)).logits, -1)
        kl_mean = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
        (d,) = torch.autograd.grad(kl_mean, d)
    g = d * real.unsqueeze(-1)
    # a plain L2 norm: the official 1e-6 guard on the sum of (x / max|x|)^2 changes it by ~1e-7 here
    return eps * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)


@pytest.mark.parametrize("iterations", [1, 2])
def test_vat_direction_matches_a_rederivation(iterations):
    batch = make_batch(labels=[0, 1, 1])
    model = tiny_model("bert", seed=6, dtype=torch.float64)  # eval: the same function every forward
    method = _method(
        model, "vat", perturb_norm_length=2.0, small_constant_for_finite_diff=0.5, num_power_iteration=iterations
    )
    logits, z = method.clean_forward(model, batch)
    torch.manual_seed(21)
    delta, g = method.direction(batch, logits.detach(), z)
    expected = _vat_rederived(model, batch, logits.detach(), 21, 0.5, 2.0, iterations)
    assert torch.allclose(delta, expected, rtol=0, atol=1e-6)
    assert float(F.cosine_similarity(delta.flatten(1), expected.flatten(1)).min()) > 1 - 1e-12
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.full((3,), 2.0, dtype=delta.dtype), rtol=1e-6)
    assert bool((delta[~batch["attention_mask"].bool()] == 0).all())
    assert float(delta.abs().min()) >= 0 and float(g.abs().max()) > 0


def test_vat_loss_and_gradients_match_a_rederivation():
    """CE + c * KL(p_clean.detach() || f(e + delta)), the adversarial branch from e itself."""
    batch = make_batch(labels=[0, 1, 1])
    model = tiny_model("bert", seed=6, dtype=torch.float64)
    twin = copy.deepcopy(model)
    method = _method(model, "vat", perturb_norm_length=1.0, adv_reg_coeff=2.0)
    loss, parts = method.loss(model, batch)
    loss.backward()
    delta = method.last_perturbation

    e = twin.bert.embeddings.word_embeddings(batch["input_ids"])
    clean = twin(inputs_embeds=e, **_inputs(batch)).logits
    log_p, log_q = (
        F.log_softmax(clean.detach(), -1),
        F.log_softmax(twin(inputs_embeds=e + delta, **_inputs(batch)).logits, -1),
    )
    kl_mean = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    ref = F.cross_entropy(clean.float(), batch["labels"]) + 2.0 * kl_mean  # the kit's CE is float32
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    assert parts["adv_loss"] == pytest.approx(float(kl_mean.detach()), rel=1e-8) and parts["adv_loss"] > 0
    assert parts["reg_loss"] == pytest.approx(2 * parts["adv_loss"])
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-8, atol=1e-13), name
    assert parts["ascent_cosine"] == pytest.approx(1.0, abs=1e-6)  # delta is g, rescaled per example
    real = batch["attention_mask"].bool()
    norms = delta.norm(dim=-1)
    assert parts["perturbation_norm"] == pytest.approx(float(norms[real].mean()), rel=1e-6)


def test_vat_skips_its_term_for_a_non_finite_gradient(monkeypatch):
    batch = make_batch(labels=[0, 1, 1])
    model = tiny_model("bert")
    method = _method(model, "vat")
    real_grad = torch.autograd.grad
    monkeypatch.setattr(
        torch.autograd, "grad", lambda out, inp, **kw: tuple(g * math.nan for g in real_grad(out, inp, **kw))
    )
    loss, parts = method.loss(model, batch)
    assert method.skipped == 1 and math.isfinite(float(loss.detach()))
    assert float(loss.detach()) == pytest.approx(parts["task_loss"]) and math.isnan(parts["adv_loss"])


# ------------------------------------------------------------------------------ R4F


def test_r4f_head_has_largest_singular_value_one_and_keeps_it_while_training():
    batch = make_batch(labels=[0, 1, 1])
    model = tiny_model("bert", seed=3, train=True)
    raw_before = model.classifier.weight.detach().clone()
    assert _sigma_max(raw_before) < 0.5  # a fresh head is far from 1: the check below has teeth
    method = _method(model, "r3f", **R4F)
    assert spectral_norm.is_normalized(model.classifier)
    # power iterations estimate sigma from below: about 1, a little above
    assert _sigma_max(model.classifier.weight) == pytest.approx(1.0, abs=1e-3)
    # one power iteration per training forward follows the weights at a fine-tuning rate (a big
    # jump, lr 5e-2, leaves the estimate behind for a few steps, as in fairseq's spectral norm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(10):
        loss, _ = method.objective(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    raw = model.classifier.parametrizations.weight.original
    assert float((raw - raw_before).abs().max()) > 5e-3  # the raw weight trained
    model.eval()
    assert _sigma_max(model.classifier.weight) == pytest.approx(1.0, abs=1e-3)
    # evaluation does not move the power iteration: the same logits twice
    with torch.no_grad():
        u = model.classifier.parametrizations.weight[0]._u.clone()
        first = model(**_inputs(batch), input_ids=batch["input_ids"]).logits
        second = model(**_inputs(batch), input_ids=batch["input_ids"]).logits
    assert torch.equal(first, second) and torch.equal(u, model.classifier.parametrizations.weight[0]._u)


def test_r4f_layers_output_is_fairseqs_out_proj_and_all_takes_every_head_linear():
    model = tiny_model("roberta")
    _method(model, "r3f", **R4F)
    assert spectral_norm.is_normalized(model.classifier.out_proj)
    assert not spectral_norm.is_normalized(model.classifier.dense)
    model = tiny_model("roberta")
    _method(model, "r3f", **R4F, spectral_norm_layers="all")
    assert spectral_norm.is_normalized(model.classifier.out_proj)
    assert spectral_norm.is_normalized(model.classifier.dense)
    assert not any(spectral_norm.is_normalized(m) for m in model.roberta.modules())


def test_a_head_loads_either_form_of_its_weights():
    model = tiny_model("bert", seed=1)
    _method(model, "r3f", **R4F)
    plain = tiny_model("bert", seed=2).state_dict()
    model.load_state_dict(plain)  # an ordinary model's weights: the head becomes plain to take them
    assert not spectral_norm.is_normalized(model.classifier)
    assert torch.equal(model.classifier.weight, plain["classifier.weight"])
    other = tiny_model("bert", seed=3)
    _method(other, "r3f", **R4F)
    model.load_state_dict(other.state_dict())  # and normalized again from a normalized state
    assert spectral_norm.is_normalized(model.classifier)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_reinit_head_reinitializes_a_normalized_head():
    """The model's initializer writes `module.weight`; on a parametrized layer that is a
    computed tensor, and the new weights would be lost."""
    model, twin = tiny_model("bert", seed=1), tiny_model("bert", seed=1)
    method = _method(model, "r3f", **R4F)
    raw = model.classifier.parametrizations.weight.original
    before = raw.detach().clone()
    torch.manual_seed(8)
    training.reinit_head(model)
    torch.manual_seed(8)
    training.reinit_head(twin)
    assert raw is model.classifier.parametrizations.weight.original  # the same Parameter (optimizers keep it)
    assert not torch.equal(raw, before)
    assert torch.equal(raw, twin.classifier.weight)
    method.start_stage(model, stage_index=1, fresh_head=True, active_before=True)
    assert _sigma_max(model.classifier.weight) == pytest.approx(1.0, abs=1e-3)


def test_the_saved_model_is_plain_and_computes_what_the_normalized_one_did(tmp_path):
    from transformers import AutoModelForSequenceClassification

    batch = make_batch(labels=[0, 1, 1])
    model = tiny_model("bert", seed=5, train=True)
    method = _method(model, "r3f", **R4F)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    for _ in range(2):
        method.objective(model, batch)[0].backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    staged = training._stage_model(tmp_path, model, tokenizer())
    loaded, info = AutoModelForSequenceClassification.from_pretrained(str(staged), output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"]
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**make_batch()).logits, model(**make_batch()).logits, rtol=0, atol=1e-6)
    assert spectral_norm.is_normalized(model.classifier)  # saving left the run's model as it was


# ------------------------------------------------------------------------------ bad values

BAD = [
    ({"algo": "r3f", "eps": -1e-5}, "eps must be a finite number > 0 for algo='r3f', got -1e-05"),
    ({"algo": "r3f", "eps": 0.0}, "eps must be a finite number > 0 for algo='r3f', got 0.0"),
    ({"algo": "r3f", "r3f_lambda": -1.0}, "r3f_lambda must be a finite number >= 0 for algo='r3f', got -1.0"),
    (
        {"algo": "r3f", "noise_type": "gaussian"},
        "noise_type must be one of 'uniform', 'normal' for algo='r3f'; got 'gaussian'",
    ),
    (
        {"algo": "r3f", "spectral_norm_layers": "all"},
        "spectral_norm_layers='all' chooses the layers R4F normalizes, but spectral_norm_classification_head=False "
        "(R3F) normalizes none; set spectral_norm_classification_head=True or leave spectral_norm_layers unset",
    ),
    (
        {"algo": "vat", "small_constant_for_finite_diff": 0.0},
        "small_constant_for_finite_diff must be a finite number > 0 for algo='vat', got 0.0",
    ),
    (
        {"algo": "vat", "small_constant_for_finite_diff": -0.1},
        "small_constant_for_finite_diff must be a finite number > 0 for algo='vat', got -0.1",
    ),
    (
        {"algo": "vat", "perturb_norm_length": 0.0},
        "perturb_norm_length must be a finite number > 0 for algo='vat', got 0.0",
    ),
    (
        {"algo": "vat", "num_power_iteration": 0},
        "num_power_iteration must be an int >= 1 for algo='vat' (the direction comes from at least one power "
        "iteration), got 0",
    ),
    ({"algo": "vat", "adv_reg_coeff": -1.0}, "adv_reg_coeff must be a finite number >= 0 for algo='vat', got -1.0"),
    (
        {"algo": "vat", "eps": 1e-5},
        "'eps' is not a knob of algo='vat' (its knobs: perturb_norm_length, small_constant_for_finite_diff, "
        "num_power_iteration, adv_reg_coeff); 'eps' is a knob of r3f",
    ),
    (
        {"algo": "r3f", "adv_epsilon": 1e-5},
        "adv_epsilon=1e-05 is SMART's and SiFT's knob, not used by algo='r3f'; leave it unset (algo='r3f''s knobs: "
        "eps, r3f_lambda, noise_type, mask_padding, spectral_norm_classification_head, spectral_norm_layers)",
    ),
]


BAD_IDS = [
    "r3f-eps-neg",
    "r3f-eps0",
    "r3f-lambda-neg",
    "r3f-noise-type",
    "r3f-layers-without-r4f",
    "vat-xi0",
    "vat-xi-neg",
    "vat-eps0",
    "vat-iterations0",
    "vat-coeff-neg",
    "vat-r3f-knob",
    "r3f-smart-field",
]


@pytest.mark.parametrize("values, message", BAD, ids=BAD_IDS)
def test_bad_values_are_named(values, message):
    with pytest.raises(ValueError) as err:
        RunConfig.from_dict(values)
    assert str(err.value) == message
    shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
    robustness_log(f"RunConfig({shown})", str(err.value))


class _NoLookupEmbeddings(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.project = torch.nn.Linear(4, 4)


class _NoLookupClassifier(torch.nn.Module):
    """An encoder classifier whose embedding block has no nn.Embedding (e.g. continuous inputs)."""

    def __init__(self):
        super().__init__()
        self.base_model = torch.nn.Module()
        self.base_model.embeddings = _NoLookupEmbeddings()


@pytest.mark.parametrize("algo", ["r3f", "vat"])
def test_a_model_without_word_embeddings_is_named(algo):
    with pytest.raises(UnsupportedModelError) as err:
        _method(_NoLookupClassifier(), algo)
    assert str(err.value) == (
        f"algo={algo!r} perturbs perturb_at='word_embeddings' (the word-embedding lookup), "
        f"which this model does not have: _NoLookupClassifier: the embedding block has no "
        f"nn.Embedding word lookup"
    )
    robustness_log(f"algo={algo!r} on a model whose embedding block has no nn.Embedding", str(err.value))


# ------------------------------------------------------------------------------ through the loop

SMOKE = dict(
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
    seed=3,
    cpu=True,
)


def _train(out: Path, **kw) -> dict:
    return train(RunConfig.from_dict({**SMOKE, "output_dir": str(out), **kw}), progress=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo, knobs",
    [
        ("r3f", {}),
        ("vat", {"num_power_iteration": 2}),
        ("r3f", {**R4F, "adv_stages": "last", "perturb_at": "embedding_output"}),
    ],
)
def test_smoke_run_through_the_loop(tmp_path, smoke_params, algo, knobs):
    cfg = RunConfig.from_yaml(smoke_params, algo=algo, output_dir=str(tmp_path / "run"), cpu=True, **knobs)
    record = train(cfg, progress=False)
    stages = [s["name"] for s in record["stages"]]
    acting = stages[-1:] if knobs.get("adv_stages") == "last" else stages
    for row in record["history"]:
        if row["stage"] in acting:
            assert row["adv_loss"] > 0 and row["relative_perturbation"] > 0 and row["reg_loss"] > 0
            assert algo != "vat" or row["ascent_cosine"] == pytest.approx(1.0, abs=1e-5)
        else:  # plain's batch, logged as plain logs it
            assert row["adv_loss"] == row["relative_perturbation"] == 0.0 and "reg_loss" not in row
    assert record["metrics"]["mean_relative_perturbation"] > 0
    assert (
        record["config"]["algo_args"]
        == RunConfig.from_dict(
            {"algo": algo, **{k: v for k, v in knobs.items() if k not in ("adv_stages", "perturb_at")}}
        ).algo_args
    )


class _Crash(Exception):
    pass


def _interrupt(out: Path, step: int, **kw) -> None:
    real = training.save_checkpoint

    def save_then_crash(accelerator, output_dir, global_step, state, **more):
        path = real(accelerator, output_dir, global_step, state, **more)
        if global_step == step:
            raise _Crash(step)
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "save_checkpoint", save_then_crash)
        with pytest.raises(_Crash):
            _train(out, save_steps=1, **kw)


@pytest.mark.slow
@pytest.mark.parametrize(
    "adv_stages, step, normalized_then", [("all", 1, True), ("first", 5, False), ("last", 5, True)]
)
def test_r4f_resumes_exactly(tmp_path, adv_stages, step, normalized_then):
    """Stage 1 is steps 1-2, stage 2 steps 3-6. The head is normalized where the method acts:
    the checkpoint holds it in that form, and the resumed run ends bit for bit as one that was
    never interrupted."""
    knobs = dict(algo="r3f", adv_stages=adv_stages, **R4F)
    reference = _train(tmp_path / "ref", save_steps=1, **knobs)
    _interrupt(tmp_path / "run", step, **knobs)
    saved = torch.load(latest_checkpoint(tmp_path / "run") / "state.pt", weights_only=False)["model"]
    assert ("classifier.parametrizations.weight.original" in saved) == normalized_then
    assert ("classifier.weight" in saved) == (not normalized_then)
    if normalized_then:
        weight = spectral_norm.baked_state_dict(saved)["classifier.weight"]
        assert _sigma_max(weight) == pytest.approx(1.0, abs=1e-3)
    resumed = _train(tmp_path / "run", save_steps=1, resume=True, **knobs)
    assert resumed["meta"]["resumed_from"] == f"step-{step:07d}"
    assert resumed["history"] == reference["history"]
    assert resumed["metrics"] == reference["metrics"]


@pytest.mark.slow
def test_r4f_with_the_stage_cache(tmp_path):
    """adv_stages='last': stage 1 is plain's (shared with a plain run); adv_stages='first':
    the cached stage holds the normalized head, and a run that loads it ends as one that
    trained it."""
    cache = str(tmp_path / "cache")
    plain = _train(tmp_path / "plain", algo="plain", stage_cache_dir=cache)
    last = _train(tmp_path / "last", algo="r3f", adv_stages="last", stage_cache_dir=cache, **R4F)
    assert last["meta"]["stages_from_cache"] == ["twitter"]
    assert last["stages"][0]["cache_key"] == plain["stages"][0]["cache_key"]
    alone = _train(tmp_path / "last_alone", algo="r3f", adv_stages="last", **R4F)
    assert last["history"] == alone["history"] and last["metrics"] == alone["metrics"]

    producer = _train(tmp_path / "producer", algo="r3f", adv_stages="first", stage_cache_dir=cache, **R4F)
    consumer = _train(tmp_path / "consumer", algo="r3f", adv_stages="first", stage_cache_dir=cache, **R4F)
    assert producer["meta"]["stages_from_cache"] == [] and consumer["meta"]["stages_from_cache"] == ["twitter"]
    assert consumer["history"] == producer["history"] and consumer["metrics"] == producer["metrics"]


def test_r4f_run_saves_a_model_that_loads_into_the_ordinary_class(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from siftkit.explore.analysis import load_run_models

    _train(tmp_path / "run", algo="r3f", reinit_head=True, save_model=True, **R4F)
    _, info = AutoModelForSequenceClassification.from_pretrained(
        str(tmp_path / "run" / "model"), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tuned = load_run_models(tmp_path / "run")["tuned"]
    assert _sigma_max(tuned.classifier.weight) == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------------------ AdversarialTrainer


def _trainer_args(tmp_path, **overrides):
    from transformers import TrainingArguments

    base = dict(
        output_dir=str(tmp_path / "hf"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    base.update(overrides)
    return TrainingArguments(**base)


@pytest.mark.parametrize(
    "algo, knobs",
    [
        ("r3f", {"eps": 1e-3, "r3f_lambda": 2.0, **R4F}),
        ("vat", {"perturb_norm_length": 1.0, "small_constant_for_finite_diff": 0.2}),
    ],
)
def test_adversarial_trainer_trains_each_with_knobs_by_name(tmp_path, algo, knobs):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, set_seed

    from siftkit import AdversarialTrainer
    from siftkit.run.objective import AdversarialLoss

    batch = make_batch(labels=[0, 1, 1])
    native_model = tiny_model("bert", seed=3, train=True)
    set_seed(0)  # as Trainer does before the method is built (R4F draws its power-iteration start)
    objective = AdversarialLoss(native_model, RunConfig.from_dict({"algo": algo, **knobs}))
    torch.manual_seed(11)
    native_loss, _ = objective(native_model, dict(batch))

    tok = tokenizer()
    texts = list(TEXTS) * 4
    ds = Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"])
    model = tiny_model("bert", seed=3, train=True)
    trainer = AdversarialTrainer(
        model=model,
        args=_trainer_args(tmp_path, max_steps=3),
        train_dataset=ds,
        processing_class=tok,
        algo=algo,
        **knobs,
    )
    assert {k: trainer.run_config.algo_args[k] for k in knobs} == knobs
    torch.manual_seed(11)
    assert float(trainer.compute_loss(model, dict(batch)).detach()) == float(native_loss.detach())

    result = trainer.train()
    assert math.isfinite(result.training_loss) and trainer.state.global_step == 3
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert logs and all(
        row["adv_loss"] > 0 and row["reg_loss"] > 0 and row["relative_perturbation"] > 0 for row in logs
    )
    if knobs.get("spectral_norm_classification_head"):
        model.eval()
        assert _sigma_max(model.classifier.weight) == pytest.approx(1.0, abs=1e-3)
        trainer.save_model(str(tmp_path / "saved"))
        loaded, info = AutoModelForSequenceClassification.from_pretrained(
            str(tmp_path / "saved"), output_loading_info=True
        )
        assert not info["missing_keys"] and not info["unexpected_keys"]
        with torch.no_grad():
            assert torch.allclose(loaded.eval()(**make_batch()).logits, model(**make_batch()).logits, atol=1e-6)


def test_bf16_autocast_keeps_the_pushes_float32():
    batch = make_batch(labels=[0, 1, 1])
    for algo, knobs in (("r3f", R4F), ("vat", {})):
        model = tiny_model("bert", train=True)
        method = _method(model, algo, **knobs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, parts = method.loss(model, batch)
        loss.backward()
        assert method.last_perturbation.dtype == torch.float32
        assert math.isfinite(float(loss)) and parts["relative_perturbation"] > 0


# ------------------------------------------------------------------------------ DDP


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = tiny_model("bert", seed=0, train=True)  # the same weights on both processes
        torch.manual_seed(100 + rank)  # a different RNG per process: the vectors' draws differ
        cfg = RunConfig.from_dict({"algo": "r3f", **R4F})
        with pytest.raises(ValueError, match="must be normalized before DDP wraps the model") as late:
            build_method(DistributedDataParallel(copy.deepcopy(model)), cfg)
        last = RunConfig.from_dict({"algo": "r3f", "task": "twitter_to_uci", "adv_stages": "last", **R4F})
        with pytest.raises(ValueError, match="adv_stages='last' on 2 processes") as refused:
            build_method(DistributedDataParallel(copy.deepcopy(model)), last)
        if rank == 0:
            robustness_log("R4F built on a model DDP already wrapped (2 processes)", str(late.value))
            robustness_log("R4F with adv_stages='last' on 2 processes", str(refused.value))
        # the loop's order: prepare the bare model, wrap it, build the method
        methods.method_class("r3f").prepare_model(model, cfg)
        ddp = DistributedDataParallel(model)
        method = build_method(ddp, cfg)
        normalized_keys = list(model.state_dict())
        optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-2)

        def step(k):
            batch = make_batch([TEXTS[(rank + k) % 3], TEXTS[(rank + k + 1) % 3]], labels=[rank, 1 - rank])
            loss, _ = method.objective(ddp, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        step(0)
        step(1)
        # a fresh head (reinit_head, then the method's stage start), then a stage without R3F (the
        # head baked into a plain weight): DDP must still average every gradient after each
        torch.manual_seed(7)
        training.reinit_head(ddp)
        method.start_stage(ddp, stage_index=1, fresh_head=True, active_before=True)
        step(2)
        method.active = False
        method.start_stage(ddp, stage_index=2, fresh_head=False, active_before=True)
        assert not spectral_norm.is_normalized(model.classifier)
        step(3)
        state = torch.cat([t.detach().flatten().double() for t in model.state_dict().values()])
        gathered = [torch.zeros_like(state) for _ in range(world)]
        dist.all_gather(gathered, state)
        if rank == 0:
            torch.save({"equal": bool(torch.equal(gathered[0], gathered[1])), "keys": normalized_keys}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.multiprocess
def test_r4f_under_ddp_every_process_keeps_the_same_head(tmp_path):
    """The head is normalized before DDP wraps the model (registering a parametrization re-seats
    the weight, and DDP would lose its hook on it): both processes then train the same head, their
    vectors from process 0's draw. Building R4F on an already wrapped model is refused."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.start_processes(_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True, start_method="spawn")
    result = torch.load(out, weights_only=False)
    assert "classifier.parametrizations.weight.0._u" in result["keys"]
    assert result["equal"]
