"""siftkit.core.regularizers: the SMART/SiFT properties of DESIGN.md section 2, each a test.

- the projected perturbation is inside the ball: ||Delta_t|| <= eps*sigma_t (SiFT), <= eps (SMART);
- scaling the tensor at perturb_at by c scales SiFT's Delta by c and leaves SMART's alone;
- at pre_layernorm, scaling the LayerNorm's input leaves SiFT's R unchanged;
- R >= 0, R = 0 without perturbation, gradient through both branches, no side effects;
- the ascent step goes up the finite-difference slope; padding gets no perturbation and
  does not change R.
"""

import pytest
import torch
from helpers import TEXTS, make_batch, tiny_model

import siftkit.core.regularizers as regularizers
from siftkit.core.regularizers import REGULARIZERS
from siftkit.core.rules import project_onto_ball
from siftkit.core.split import PERTURB_POINTS, EmbeddingSplit, model_inputs
from siftkit.run.config import ALGO_DEFAULTS

ALGOS = ("smart", "sift")
NORMS = ("inf", "l2")


def make_reg(algo, at="embedding_output", norm="inf", **overrides):
    """A regularizer with the algorithm's published defaults (config.ALGO_DEFAULTS)."""
    knobs = {k: v for k, v in ALGO_DEFAULTS[algo].items() if k != "adv_weight"}
    knobs.update(overrides)
    return REGULARIZERS[algo](perturb_at=at, adv_norm=norm, **knobs)


def token_norms(t, norm):
    t = t.double()
    return t.abs().amax(-1) if norm == "inf" else t.norm(dim=-1)


def sym_kl64(p_logits, q_logits):
    """Symmetric KL in float64 (independent of siftkit.core.divergences)."""
    lp, lq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return ((lp.exp() - lq.exp()) * (lp - lq)).sum(-1).mean()


@pytest.fixture(scope="module")
def batch():
    return make_batch(TEXTS)


@pytest.fixture(scope="module")
def mask(batch):
    m = batch["attention_mask"].bool()
    assert (~m).any(), "the test batch must contain padding"
    return m


@pytest.fixture(scope="module")
def bert():
    return tiny_model("bert")


@pytest.fixture(scope="module")
def bert64():
    return tiny_model("bert", dtype=torch.float64)


def run(reg, split, batch, *, z=None, seed=0, clean=None):
    """Call reg once with a fixed RNG seed; clean logits default to f(z) (or the model's)."""
    at = reg.perturb_at
    if clean is None:
        with torch.no_grad():
            clean = split.forward_from(z, batch, at) if z is not None else split.model(**model_inputs(batch)).logits
    torch.manual_seed(seed)
    return reg(split, batch, clean, z)


# ------------------------------------------------------------------------------ property 1


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("at", PERTURB_POINTS)
@pytest.mark.parametrize("algo", ALGOS)
def test_perturbation_inside_the_ball(bert, batch, mask, algo, at, norm):
    split = EmbeddingSplit(bert)
    reg = make_reg(algo, at, norm)
    with torch.no_grad():
        logits, z = split.forward_capture(batch, at)
    torch.manual_seed(0)
    reg(split, batch, logits, z)
    delta = reg.last_perturbation
    assert delta is not None and delta.shape == z.shape and not reg.last_skipped
    eps = reg.adv_epsilon
    norms = token_norms(delta, norm)[mask]
    if algo == "sift":
        sigma = reg.last_scale
        assert sigma is not None and sigma.shape == (*z.shape[:2], 1)
        # sigma_t is the population std of the token's z over the hidden dim (real tokens)
        expected = z.double().std(-1, unbiased=False)
        assert torch.allclose(sigma.squeeze(-1).double()[mask], expected[mask], rtol=1e-5)
        assert torch.allclose(reg.last_mean.squeeze(-1).double()[mask], z.double().mean(-1)[mask], rtol=1e-5, atol=1e-7)
        bound = eps * sigma.squeeze(-1).double()[mask]
    else:
        assert reg.last_scale is None
        bound = torch.full_like(norms, eps)
    assert (norms <= bound * (1 + 1e-6)).all(), f"max ||Delta_t|| / bound = {float((norms / bound).max())}"
    # With these defaults the unprojected delta is outside the ball for every token
    # (SMART: step 1e-3 >> eps 1e-5; SiFT: noise 0.01 per coordinate over >= 16 dims),
    # so a real projection puts every token on the sphere; a missing one overshoots.
    assert (norms >= bound * (1 - 1e-4)).all(), "projection did not reach the ball's boundary"


# ------------------------------------------------------------------------------ property 2


@pytest.fixture
def fixed_direction(monkeypatch):
    """Replace the input gradient by a fixed tensor, so delta is independent of z's scale.

    Isolates the map from delta to the raw perturbation: with the same noise (same RNG)
    and the same ascent direction, Delta must be sigma_t*delta (SiFT) or delta (SMART).
    """

    def fake(loss, delta):
        g = torch.Generator().manual_seed(1234)
        return torch.randn(delta.shape, generator=g, dtype=delta.dtype)

    monkeypatch.setattr(regularizers, "input_gradient", fake)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("at", PERTURB_POINTS)
def test_scaling_z_scales_sift_delta_not_smart_same_direction(bert, batch, fixed_direction, at, norm):
    split = EmbeddingSplit(bert)
    with torch.no_grad():
        z1 = split.embed(batch, at)
    deltas = {}
    for algo in ALGOS:
        reg = make_reg(algo, at, norm)
        for c in (1.0, 0.1, 10.0):
            run(reg, split, batch, z=c * z1)
            deltas[algo, c] = reg.last_perturbation.double()
    for c in (0.1, 10.0):
        assert torch.allclose(deltas["sift", c], c * deltas["sift", 1.0], rtol=1e-4, atol=0), (
            f"SiFT Delta did not scale by c={c}"
        )
        assert torch.allclose(deltas["smart", c], deltas["smart", 1.0], rtol=1e-6, atol=0), (
            f"SMART Delta changed with c={c}"
        )
    assert deltas["sift", 1.0].abs().max() > 0 and deltas["smart", 1.0].abs().max() > 0


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("at", PERTURB_POINTS)
def test_scaling_z_real_gradient_token_norms(bert, batch, mask, at, norm):
    """With the real gradient: per-token ||Delta_t|| scales by c for SiFT, not for SMART.

    (Element-wise equality needs the same ascent direction, which only a scale-invariant
    rest-of-model gives; see the pre_layernorm test below.) The projected norms are on
    the ball's boundary for both, so they are independent of the direction.
    """
    split = EmbeddingSplit(bert)
    with torch.no_grad():
        z1 = split.embed(batch, at)
    norms = {}
    for algo in ALGOS:
        reg = make_reg(algo, at, norm)
        for c in (1.0, 0.1, 10.0):
            run(reg, split, batch, z=c * z1)
            norms[algo, c] = token_norms(reg.last_perturbation, norm)[mask]
    for c in (0.1, 10.0):
        assert torch.allclose(norms["sift", c], c * norms["sift", 1.0], rtol=1e-4)
        assert torch.allclose(norms["smart", c], norms["smart", 1.0], rtol=1e-4)
        assert (norms["smart", c] <= make_reg("smart").adv_epsilon * (1 + 1e-6)).all()


@pytest.mark.parametrize("norm", NORMS)
def test_scaling_at_pre_layernorm_real_gradient_elementwise(bert, batch, norm):
    """At pre_layernorm the LayerNorm makes the ascent direction scale-free: SiFT's Delta
    scales by c element-wise with the real gradient; SMART's stays on its eps-ball."""
    at = "pre_layernorm"
    split = EmbeddingSplit(bert)
    with torch.no_grad():
        z1 = split.embed(batch, at)
    deltas = {}
    for algo in ALGOS:
        reg = make_reg(algo, at, norm)
        for c in (1.0, 0.1, 10.0):
            run(reg, split, batch, z=c * z1)
            deltas[algo, c] = reg.last_perturbation.double()
    for c in (0.1, 10.0):
        assert torch.allclose(deltas["sift", c], c * deltas["sift", 1.0], rtol=1e-4, atol=1e-12)
        eps = make_reg("smart").adv_epsilon
        assert token_norms(deltas["smart", c], norm).max() <= eps * (1 + 1e-6)


# ------------------------------------------------------------------------------ property 3


def _r_with_scaled_layernorm_input(model, batch, reg, c, seed=0):
    split = EmbeddingSplit(model)

    def scale_input(_module, args):
        return (args[0] * c,) + tuple(args[1:])

    handle = split.layer_norm.register_forward_pre_hook(scale_input)
    try:
        with torch.no_grad():
            logits, z = split.forward_capture(batch, "pre_layernorm")
        torch.manual_seed(seed)
        r = reg(split, batch, logits, z)
    finally:
        handle.remove()
    return float(r)


def test_pre_layernorm_sift_r_invariant_to_input_scale_smart_not(bert64, batch):
    knobs = dict(adv_epsilon=1e-2, adv_noise_std=1e-2, adv_step_size=1e-3)  # same ball for both
    r = {}
    for algo in ALGOS:
        reg = make_reg(algo, "pre_layernorm", "inf", **knobs)
        for c in (1.0, 0.1, 10.0):
            r[algo, c] = _r_with_scaled_layernorm_input(bert64, batch, reg, c)
    assert r["sift", 1.0] > 0 and r["smart", 1.0] > 0
    for c in (0.1, 10.0):
        assert r["sift", c] == pytest.approx(r["sift", 1.0], rel=1e-6), f"SiFT R changed with c={c}"
        assert abs(r["smart", c] / r["smart", 1.0] - 1) > 0.1, f"SMART R did not change with c={c}"


# ------------------------------------------------------------------------------ property 4


@pytest.mark.parametrize("divergence", ["sym_kl", "kl", "js", "mse"])
@pytest.mark.parametrize("at", PERTURB_POINTS)
@pytest.mark.parametrize("algo", ALGOS)
def test_r_non_negative(bert, batch, algo, at, divergence):
    split = EmbeddingSplit(bert)
    reg = make_reg(algo, at, divergence=divergence)
    with torch.no_grad():
        logits, z = split.forward_capture(batch, at)
    for seed in range(2):
        torch.manual_seed(seed)
        r = reg(split, batch, logits, z)
        assert r.ndim == 0 and torch.isfinite(r)
        assert float(r) >= 0.0, f"R = {float(r):.3g} < 0 ({algo}, {at}, {divergence}, seed {seed})"


@pytest.mark.parametrize("at", PERTURB_POINTS)
@pytest.mark.parametrize("algo", ALGOS)
def test_r_zero_without_perturbation(bert, batch, algo, at):
    split = EmbeddingSplit(bert)
    reg = make_reg(algo, at, adv_noise_std=0.0)
    logits, z = split.forward_capture(batch, at)
    torch.manual_seed(0)
    r = reg(split, batch, logits, z)
    assert abs(float(r)) < 1e-12
    assert torch.count_nonzero(reg.last_perturbation) == 0


@pytest.mark.parametrize("divergence", ["kl", "js", "mse"])
def test_r_zero_without_perturbation_other_divergences(bert, batch, divergence):
    """With no noise the ascent starts at the divergence's minimum, where its gradient is 0."""
    split = EmbeddingSplit(bert)
    reg = make_reg("sift", adv_noise_std=0.0, divergence=divergence)
    logits, z = split.forward_capture(batch, "embedding_output")
    torch.manual_seed(0)
    r = reg(split, batch, logits, z)
    assert abs(float(r)) < 1e-12, f"{divergence}: R = {float(r):.3g} with zero noise"
    assert torch.count_nonzero(reg.last_perturbation) == 0


def _grads_of_r(model, batch, *, detach_clean, detach_z, at="embedding_output"):
    model.zero_grad(set_to_none=True)
    split = EmbeddingSplit(model)
    reg = make_reg("sift", at)
    logits, z = split.forward_capture(batch, at)
    torch.manual_seed(0)
    r = reg(split, batch, logits.detach() if detach_clean else logits, z.detach() if detach_z else z)
    r.backward()
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def test_gradient_reaches_both_branches():
    model = tiny_model("bert", seed=1)
    with torch.no_grad():  # a livelier head than the 0.02-std init, so gradients are well above rounding
        model.classifier.weight.mul_(50.0)
    batch = make_batch(TEXTS)
    word, head = "bert.embeddings.word_embeddings.weight", "classifier.weight"

    full = _grads_of_r(model, batch, detach_clean=False, detach_z=False)
    adv_only = _grads_of_r(model, batch, detach_clean=True, detach_z=False)
    clean_only_to_embeddings = _grads_of_r(model, batch, detach_clean=False, detach_z=True)
    neither = _grads_of_r(model, batch, detach_clean=True, detach_z=True)

    for g in (full, adv_only, clean_only_to_embeddings, neither):
        assert g[head] is not None and g[head].abs().max() > 0  # the head always learns
    # the clean branch carries gradient: detaching it changes the gradients
    assert not torch.allclose(full[head], adv_only[head], rtol=1e-3, atol=0)
    assert not torch.allclose(full[word], adv_only[word], rtol=1e-3, atol=0)
    # parameters before the perturbation point get gradient from each branch alone ...
    assert clean_only_to_embeddings[word] is not None and clean_only_to_embeddings[word].abs().max() > 0
    assert adv_only[word] is not None and adv_only[word].abs().max() > 0
    # ... and from neither once both are cut (so the two checks above can fail)
    assert neither[word] is None or neither[word].abs().max() == 0


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("algo", ALGOS)
def test_no_side_effects_on_parameters(algo, training):
    model = tiny_model("bert", seed=2, train=training)
    batch = make_batch(TEXTS)
    model.bert.embeddings.position_embeddings.weight.requires_grad_(False)  # a frozen one
    model.bert.encoder.layer[0].attention.self.query.weight.grad = torch.ones_like(
        model.bert.encoder.layer[0].attention.self.query.weight
    )
    model.classifier.bias.grad = torch.full_like(model.classifier.bias, 3.0)
    before = {
        n: (p.requires_grad, None if p.grad is None else p.grad.clone(), p.grad) for n, p in model.named_parameters()
    }
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}

    split = EmbeddingSplit(model)
    reg = make_reg(algo, "embedding_output")
    logits, z = split.forward_capture(batch, "embedding_output")
    torch.manual_seed(0)
    r = reg(split, batch, logits, z)
    assert r.requires_grad  # a loss to backpropagate later, not already backpropagated

    assert model.training is training
    for n, p in model.named_parameters():
        req, grad_copy, grad_obj = before[n]
        assert p.requires_grad is req, f"{n}: requires_grad toggled"
        if grad_copy is None:
            assert p.grad is None, f"{n}: .grad was None and is now set"
        else:
            assert p.grad is grad_obj and torch.equal(p.grad, grad_copy), f"{n}: .grad changed"
        assert torch.equal(p.detach(), weights[n]), f"{n}: weights changed"


# ------------------------------------------------------------------------------ property 5


@pytest.mark.parametrize(
    "algo, at", [("smart", "embedding_output"), ("sift", "word_embeddings"), ("sift", "pre_layernorm")]
)
def test_ascent_matches_finite_differences(bert64, batch, mask, monkeypatch, algo, at):
    """g = d ls(f(z + s*delta), c)/d delta agrees with central differences in float64, and
    the step moves delta up that slope (ascent, not descent)."""
    split = EmbeddingSplit(bert64)
    with torch.no_grad():
        logits, z = split.forward_capture(batch, at)
    seen = {}
    real_input_gradient = regularizers.input_gradient

    def spy(loss, delta):
        seen["delta0"] = delta.detach().clone()
        g = real_input_gradient(loss, delta)
        seen["g"] = g.detach().clone()
        return g

    monkeypatch.setattr(regularizers, "input_gradient", spy)
    # a ball so large that the projection is inactive: the step is visible as is
    reg = make_reg(algo, at, "inf", adv_epsilon=10.0, adv_noise_std=0.05, adv_step_size=1e-3)
    torch.manual_seed(0)
    reg(split, batch, logits, z)
    delta0, g = seen["delta0"].double(), seen["g"].double()
    scale = reg.last_scale.double() if algo == "sift" else torch.ones(1, dtype=torch.float64)
    delta1 = reg.last_perturbation.double() / scale

    target = logits.detach()

    def ls(d):
        with torch.no_grad():
            return sym_kl64(split.forward_from(z.double() + scale * d, batch, at), target)

    # the largest-|g| coordinates on real tokens
    g_real = g.abs() * mask.unsqueeze(-1)
    coords = torch.topk(g_real.flatten(), 6).indices
    h = 1e-4
    for flat in coords.tolist():
        e = torch.zeros(g.numel(), dtype=torch.float64)
        e[flat] = h
        e = e.view_as(g)
        fd = float((ls(delta0 + e) - ls(delta0 - e)) / (2 * h))
        gi = float(g.flatten()[flat])
        assert fd != 0.0
        assert (gi > 0) == (fd > 0), f"gradient sign {gi:.3g} vs finite difference {fd:.3g}"
        assert abs(gi - fd) <= 2e-2 * abs(fd), f"gradient {gi:.6g} vs finite difference {fd:.6g}"
        step = float((delta1 - delta0).flatten()[flat])
        assert (step > 0) == (fd > 0), "delta moved against the slope"
    # the step increases the divergence (first-order positive, step is tiny)
    assert float(ls(delta1)) > float(ls(delta0))


@pytest.mark.parametrize("norm", NORMS)
def test_project_bounds_every_token(norm):
    g = torch.Generator().manual_seed(0)
    big = 100.0 * torch.randn(4, 7, 16, generator=g)
    out = project_onto_ball(big, 0.3, norm)  # the projected rule's ball (SMART's raw, SiFT's normalized units)
    assert out.shape == big.shape and torch.isfinite(out).all()
    norms = token_norms(out, norm)
    assert (norms <= 0.3 * (1 + 1e-6)).all()
    assert (norms >= 0.3 * (1 - 1e-6)).all()  # outside points land on the sphere
    if norm == "l2":  # a projection onto the l2 ball keeps the direction
        cos = torch.nn.functional.cosine_similarity(out.double(), big.double(), dim=-1)
        assert torch.allclose(cos, torch.ones_like(cos), atol=1e-6)
    else:
        assert torch.equal(out.sign(), big.sign())
    small = 1e-3 * torch.randn(4, 7, 16, generator=g)  # already inside: unchanged
    assert torch.allclose(project_onto_ball(small, 0.3, norm), small, rtol=1e-6, atol=0)
    assert torch.equal(project_onto_ball(torch.zeros(2, 3, 16), 0.3, norm), torch.zeros(2, 3, 16))


# ------------------------------------------------------------------------------ property 6


@pytest.mark.parametrize("at", PERTURB_POINTS)
@pytest.mark.parametrize("algo", ALGOS)
def test_no_perturbation_on_padding(bert, batch, mask, algo, at):
    split = EmbeddingSplit(bert)
    reg = make_reg(algo, at, adv_noise_std=0.5)  # big noise: any leak onto padding shows
    with torch.no_grad():
        logits, z = split.forward_capture(batch, at)
    torch.manual_seed(0)
    reg(split, batch, logits, z)
    delta = reg.last_perturbation
    assert torch.count_nonzero(delta[~mask]) == 0, "padding positions were perturbed"
    assert (delta[mask].abs().amax(-1) > 0).all(), "a real token got no perturbation"


@pytest.mark.parametrize("at", PERTURB_POINTS)
@pytest.mark.parametrize("algo", ALGOS)
def test_padding_length_does_not_change_r(bert, algo, at):
    """Same texts padded to two lengths give the same R and real-token Delta.

    adv_noise_std=0 makes delta deterministic (no draw whose shape follows the length);
    a fixed offset on the clean logits gives the ascent a non-zero gradient to follow.
    """
    short = make_batch(TEXTS)
    length = short["input_ids"].shape[1]
    long = make_batch(TEXTS, padding="max_length", max_length=length + 9)
    assert long["input_ids"].shape[1] == length + 9
    assert torch.equal(long["input_ids"][:, :length], short["input_ids"])
    split = EmbeddingSplit(bert)
    offset = torch.tensor([0.4, -0.4])
    results = {}
    for name, b in (("short", short), ("long", long)):
        reg = make_reg(algo, at, adv_noise_std=0.0)
        with torch.no_grad():
            logits, z = split.forward_capture(b, at)
        torch.manual_seed(0)
        r = reg(split, b, logits + offset, z)
        results[name] = (float(r), reg.last_perturbation.double())
    (r_short, d_short), (r_long, d_long) = results["short"], results["long"]
    assert r_short > 0
    assert r_long == pytest.approx(r_short, rel=1e-5)
    assert d_short.abs().max() > 0
    assert torch.allclose(d_long[:, :length], d_short, rtol=1e-5, atol=1e-5 * float(d_short.abs().max()))
    assert torch.count_nonzero(d_long[:, length:]) == 0
