"""The perturbation rules (`adv_rule`), each checked against a re-derivation from its
published formula, written here independently of siftkit.core.regularizers and fed the same
initial noise: delta, R and R's parameter gradient (which branch it reaches) must agree.

- projected: SMART paper, Algorithm 1 (eps-ball projection);
- mtdnn: mt-dnn's SmartPerturbation (stable_kl ascent, u / (max|u| + 1e-6), half-detached
  symmetric KL via F.kl_div with detached targets);
- deberta: DeBERTa's PerturbationLayer at the embedding LayerNorm's input (LayerNorm without
  affine, eps 1e-7; clamped noise; one step eta g / (max|g| + 1e-6); symmetric cross-entropy
  with detached weights; detached adversarial input);
- seed_code: the seed paper's notebooks (per-sentence mean / unbiased std with padding,
  mt-dnn's step, R = stable_kl(clean, adversarial)).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import TEXTS, make_batch, tiny_model

import siftkit.core.regularizers as regularizers
import siftkit.core.rules as rules
from siftkit.core.perturbation_specs import ADV_RULES
from siftkit.core.regularizers import REGULARIZERS
from siftkit.core.split import EmbeddingSplit
from siftkit.run.config import RunConfig

SEED = 123
KNOBS = dict(adv_noise_std=0.1, adv_step_size=0.05)


@pytest.fixture(scope="module")
def model():
    return tiny_model("bert", dtype=torch.float64)  # float64: agreement to 1e-6 means the math agrees


@pytest.fixture(scope="module")
def split(model):
    return EmbeddingSplit(model)


@pytest.fixture(scope="module")
def batch():
    b = make_batch(TEXTS)
    assert (~b["attention_mask"].bool()).any(), "the test batch must contain padding"
    return b


def params_of(model):
    return [p for p in model.parameters() if p.requires_grad]


def grads(loss, model):
    gs = torch.autograd.grad(loss, params_of(model), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params_of(model))]


def stable_kl_ref(logit, target, reduce):
    """mt-dnn's loss.py stable_kl, written out."""
    bs = logit.shape[0]
    p = F.log_softmax(logit, 1).exp()
    y = F.log_softmax(target, 1).exp()
    rp = -(1.0 / (p + 1e-6) - 1 + 1e-6).detach().log()
    ry = -(1.0 / (y + 1e-6) - 1 + 1e-6).detach().log()
    total = (p * (rp - ry) * 2).sum()
    return total / bs if reduce else total


def sym_kl_value(a, c):
    la, lc = F.log_softmax(a, -1), F.log_softmax(c, -1)
    return ((la.exp() - lc.exp()) * (la - lc)).sum(-1).mean()


def reference(rule, algo, split, batch, at, steps, eps=None):
    """(delta in the rule's units, R, grads of R) by the published formula."""
    model = split.model
    sigma_n, eta = KNOBS["adv_noise_std"], KNOBS["adv_step_size"]
    m = batch["attention_mask"].bool().unsqueeze(-1).to(torch.float64)
    c, z = split.forward_capture(batch, at)  # live: R's gradient is taken through these
    zd, cd = z.detach(), c.detach()
    # Normalize, perturb, de-normalize: ((z - mu) / s + d) * s + mu = z + s * d, so only the
    # scale s enters (the mean cancels).
    if algo == "smart":
        s = torch.ones_like(zd[..., :1])
    elif rule == "seed_code":
        s = zd.std(dim=(1, 2)).view(-1, 1, 1)  # torch.std: unbiased, over padding too
    elif rule == "deberta":
        s = (zd.var(-1, unbiased=False, keepdim=True) + 1e-7).sqrt()
    else:
        s = zd.std(-1, unbiased=False, keepdim=True)

    def feed(d, base):
        # DeBERTa feeds LayerNorm_no_affine(x) + delta to the model's own LayerNorm; the
        # other codes de-normalize. SMART feeds z + delta.
        if rule == "deberta" and algo == "sift":
            return split.forward_from(F.layer_norm(base, base.shape[-1:], eps=1e-7) + d, batch, at)
        return split.forward_from(base + s * d, batch, at)

    torch.manual_seed(SEED)
    d = torch.randn(zd.shape, dtype=zd.dtype) * sigma_n
    if rule == "deberta":
        d = d.clamp(-2 * sigma_n, 2 * sigma_n)
    d = d * m
    if steps == 0 and rule in ("mtdnn", "seed_code"):
        d = d / (d.abs().amax(-1, keepdim=True) + 1e-6) * m
    if steps == 0 and rule == "projected":
        d = d.clamp(-eps, eps)
    for _ in range(steps):
        d = d.detach().requires_grad_(True)
        a = feed(d, zd)
        if rule == "projected":
            loss = sym_kl_value(a, cd)
        elif rule == "deberta":
            pc = F.softmax(cd, -1)
            loss = (
                (pc * -F.log_softmax(a, -1)).sum(-1) + (F.softmax(a, -1).detach() * -F.log_softmax(cd, -1)).sum(-1)
            ).sum()
        else:
            loss = stable_kl_ref(a, cd, reduce=False)
        (g,) = torch.autograd.grad(loss, d)
        d = d.detach()
        if rule == "projected":
            peak = g.abs().amax(-1, keepdim=True)  # g / ||g||_inf, 0 where g = 0 (padding)
            d = (d + eta * g / torch.where(peak > 0, peak, torch.ones_like(peak))).clamp(-eps, eps)
        elif rule == "deberta":
            d = d + eta * g / (1e-6 + g.abs().amax(-1, keepdim=True))
        else:
            u = d + eta * g
            d = u / (u.abs().amax(-1, keepdim=True) + 1e-6)
        d = d * m
    d = d.detach()
    if rule == "deberta":
        a = feed(d, zd)  # DeBERTa: the adversarial branch starts from a detached input
    else:
        a = feed(d, z)
    if rule == "projected":
        r_value, r_for_grad = sym_kl_value(a, c), sym_kl_value(a, c)
    elif rule == "seed_code":
        r_value = r_for_grad = stable_kl_ref(c, a, reduce=True)
    elif rule == "mtdnn":  # mt-dnn's SymKlCriterion(logits, adv_logits)
        r_for_grad = F.kl_div(F.log_softmax(c, -1), F.softmax(a.detach(), -1), reduction="batchmean") + F.kl_div(
            F.log_softmax(a, -1), F.softmax(c.detach(), -1), reduction="batchmean"
        )
        r_value = r_for_grad
    else:  # DeBERTa's symmetric_kl: cross entropies with detached weights; value = sym KL + entropies
        pa, pc = F.softmax(a, -1).detach(), F.softmax(c, -1).detach()
        r_for_grad = ((pc * -F.log_softmax(a, -1)).sum(-1) + (pa * -F.log_softmax(c, -1)).sum(-1)).mean()
        r_value = sym_kl_value(a.detach(), c.detach())
    return d, float(r_value.detach()), grads(r_for_grad, model)


CASES = [(rule, algo) for rule in ADV_RULES for algo in ("smart", "sift")]


@pytest.mark.parametrize("steps", [1, 2, 0])
@pytest.mark.parametrize("rule,algo", CASES)
def test_rule_matches_its_published_formula(rule, algo, steps, split, batch):
    at = "pre_layernorm" if rule == "deberta" else "embedding_output"
    eps = 0.2 if rule == "projected" else None
    reg = REGULARIZERS[algo](
        adv_rule=rule,
        adv_epsilon=eps,
        adv_steps=steps,
        perturb_at=at,
        adv_noise_std=KNOBS["adv_noise_std"],
        adv_step_size=KNOBS["adv_step_size"] if steps else None,
    )
    c, z = split.forward_capture(batch, at)
    torch.manual_seed(SEED)
    r = reg(split, batch, c, z)
    got_grads = grads(r, split.model)

    d_ref, r_ref, g_ref = reference(rule, algo, split, batch, at, steps, eps)
    torch.testing.assert_close(reg.last_delta, d_ref, rtol=0, atol=1e-6)
    assert float(r.detach()) == pytest.approx(r_ref, rel=1e-6, abs=1e-12)
    assert abs(r_ref) > 1e-8, "the case must produce a measurable R"
    for got, ref in zip(got_grads, g_ref):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-10)


def test_mtdnn_delta_is_unit_per_real_token_and_zero_on_padding(split, batch):
    mask = batch["attention_mask"].bool()
    for algo in ("smart", "sift"):
        reg = REGULARIZERS[algo](adv_rule="mtdnn", adv_noise_std=1e-5, adv_step_size=1e-3)
        c, z = split.forward_capture(batch)
        reg(split, batch, c, z)
        peak = reg.last_delta.abs().amax(-1)[mask]
        # u / (max|u| + 1e-6): just below 1; at sigma = 1e-5 the guard shortens it by a few %
        assert (peak <= 1).all() and (peak > 0.9).all()
        assert (reg.last_delta[~mask] == 0).all() and (reg.last_perturbation[~mask] == 0).all()


def test_deberta_initial_noise_never_exceeds_two_sigma(split, batch):
    sigma = 0.01
    reg = REGULARIZERS["sift"](adv_rule="deberta", adv_noise_std=sigma, adv_steps=0, perturb_at="pre_layernorm")
    c, z = split.forward_capture(batch, "pre_layernorm")
    reg(split, batch, c, z)
    d = reg.last_delta[batch["attention_mask"].bool()]
    assert d.abs().max() <= 2 * sigma * (1 + 1e-12)
    assert (d.abs() >= 2 * sigma * (1 - 1e-12)).any(), "the clamp must be active on some coordinates"


@pytest.mark.parametrize("rule", ADV_RULES)
def test_zero_steps_is_two_forwards_and_keeps_the_initial_noise(rule, split, batch):
    calls = []
    handle = split.model.register_forward_pre_hook(lambda *_: calls.append(1))
    eps = 10.0 if rule == "projected" else None  # a ball that does not bind: delta_0 kept as drawn
    reg = REGULARIZERS["smart"](adv_rule=rule, adv_epsilon=eps, adv_noise_std=0.1, adv_steps=0)
    try:
        c, z = split.forward_capture(batch)
        torch.manual_seed(SEED)
        reg(split, batch, c, z)
    finally:
        handle.remove()
    assert len(calls) == 2  # the clean forward above and R's adversarial forward
    torch.manual_seed(SEED)
    m = batch["attention_mask"].bool().unsqueeze(-1).to(torch.float64)
    d0 = torch.randn(z.shape, dtype=z.dtype) * 0.1
    if rule == "deberta":
        d0 = d0.clamp(-0.2, 0.2)
    d0 = d0 * m
    if rule in ("mtdnn", "seed_code"):
        d0 = d0 / (d0.abs().amax(-1, keepdim=True) + 1e-6) * m
    torch.testing.assert_close(reg.last_delta, d0, rtol=0, atol=1e-12)
    assert reg.last_gradient is None


@pytest.mark.parametrize("norm", ["inf", "l2"])
def test_step_direction_is_unit_even_for_a_tiny_gradient(norm):
    g = torch.randn(2, 5, 8) * 1e-20
    g[1, 4] = 0.0  # a padded token: no gradient, no step
    d = rules.unit_direction(g, norm)  # the projected rule's step direction
    n = d.abs().amax(-1) if norm == "inf" else d.norm(dim=-1)
    real = torch.ones(2, 5, dtype=torch.bool)
    real[1, 4] = False
    torch.testing.assert_close(n[real], torch.ones_like(n[real]), rtol=1e-6, atol=0)
    assert (d[1, 4] == 0).all()


def test_tiny_gradient_still_takes_a_full_step(monkeypatch, split, batch):
    """End to end: a gradient of 1e-20 moves delta by exactly eta (inf norm), as documented."""
    real_grad = regularizers.input_gradient
    monkeypatch.setattr(
        regularizers, "input_gradient", lambda loss, d: real_grad(loss, d) * 0 + 1e-20 * torch.ones_like(d)
    )
    reg = REGULARIZERS["smart"](adv_epsilon=1.0, adv_step_size=1e-3, adv_noise_std=0.0)
    c, z = split.forward_capture(batch)
    reg(split, batch, c, z)
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(reg.last_delta[mask], torch.full_like(reg.last_delta[mask], 1e-3))


def test_half_detached_sym_kl_value_and_gradients():
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    r = rules.half_detached_sym_kl(a, c)
    assert float(r) == pytest.approx(float(sym_kl_value(a, c)), rel=1e-6)
    ga, gc = torch.autograd.grad(r, (a, c))
    pa, pc = F.softmax(a, -1).detach(), F.softmax(c, -1).detach()
    torch.testing.assert_close(ga, (pa - pc) / 4)
    torch.testing.assert_close(gc, (pc - pa) / 4)


def test_seed_code_r_can_be_negative_and_reaches_the_clean_branch_only():
    torch.manual_seed(0)
    found_negative = False
    for _ in range(50):
        a = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
        c = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
        r = rules.stable_kl(c, a, mean=True)
        ga, gc = torch.autograd.grad(r, (a, c), allow_unused=True)
        assert ga is None or (ga == 0).all()
        assert gc is not None and gc.abs().sum() > 0
        found_negative |= float(r) < 0
    assert found_negative


# --- the knobs a rule does not use are errors, not silently dropped -----------------------


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(algo="smart", adv_rule="mtdnn", adv_epsilon=1e-5), "adv_epsilon=1e-05 is not used by adv_rule='mtdnn'"),
        (dict(algo="sift", adv_rule="deberta", adv_epsilon=0.1), "adv_epsilon=0.1 is not used by adv_rule='deberta'"),
        (
            dict(algo="sift", adv_rule="seed_code", adv_epsilon=0.1),
            "adv_epsilon=0.1 is not used by adv_rule='seed_code'",
        ),
        (
            dict(algo="smart", adv_steps=0, adv_step_size=1e-3),
            "adv_step_size=0.001 is not used by adv_rule='projected' "
            "with adv_steps=0 (adv_steps=0 takes no ascent step)",
        ),
        (dict(algo="sift", adv_rule="deberta", adv_norm="l2"), "adv_norm must be 'inf' for adv_rule='deberta'"),
        (dict(algo="smart", adv_rule="mtdnn", divergence="kl"), "divergence must stay 'sym_kl' for adv_rule='mtdnn'"),
        (dict(algo="smart", adv_rule="pgd"), "adv_rule must be one of 'projected', 'mtdnn', 'deberta', 'seed_code'"),
    ],
)
def test_rule_knob_errors_name_the_knob(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        RunConfig(**kwargs)


def test_rule_defaults_resolve_record_none_for_unused_and_rebuild():
    cfg = RunConfig(algo="smart", adv_rule="mtdnn")
    assert (cfg.adv_epsilon, cfg.adv_noise_std, cfg.adv_step_size) == (None, 1e-5, 1e-3)
    assert RunConfig(algo="sift", adv_rule="deberta").adv_step_size == 1e-4
    zero = RunConfig(algo="sift", adv_steps=0)
    assert zero.adv_step_size is None and zero.adv_epsilon == 1e-2
    for c in (cfg, zero, RunConfig(algo="sift", adv_rule="seed_code")):
        assert RunConfig.from_dict(c.to_dict()) == c  # what results.json records rebuilds
    # changing the rule re-derives the knobs that were resolved for the old one
    assert cfg.replace(adv_rule="projected").adv_epsilon == 1e-5
    assert RunConfig(algo="smart").replace(adv_rule="mtdnn").adv_epsilon is None
    assert zero.replace(adv_steps=1).adv_step_size == 1e-3


def test_regularizer_takes_the_rule_from_the_config():
    reg = REGULARIZERS["sift"].from_config(RunConfig(algo="sift", adv_rule="seed_code", adv_steps=2))
    assert (reg.adv_rule, reg.adv_steps, reg.adv_epsilon) == ("seed_code", 2, None)
    assert "rule=seed_code" in repr(reg)


def test_relative_size_of_the_mtdnn_rule_is_large_and_random_at_published_settings(split, batch):
    """At sigma = 1e-5, eta = 1e-3 the ascent term is negligible: delta is the noise direction."""
    reg = REGULARIZERS["smart"](adv_rule="mtdnn", adv_noise_std=1e-5, adv_step_size=1e-3)
    c, z = split.forward_capture(batch)
    torch.manual_seed(SEED)
    reg(split, batch, c, z)
    mask = batch["attention_mask"].bool()
    torch.manual_seed(SEED)
    d0 = torch.randn(z.shape, dtype=z.dtype)
    cos_noise = F.cosine_similarity(reg.last_delta, d0, dim=-1)[mask]
    assert cos_noise.min() > 0.99
    assert math.isfinite(reg.last_stats["relative_perturbation"]) and reg.last_stats["relative_perturbation"] > 0.1
