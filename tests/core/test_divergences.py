"""siftkit.core.divergences: values against independent float64 formulas, signs, gradients, dtypes."""

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from siftkit.core.divergences import DIVERGENCES, get_divergence, js, kl, mse, symmetric_kl

NAMES = ("sym_kl", "kl", "js", "mse")


def _logits(seed, shape=(6, 3), scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)


def _ref_kl(p_logits, q_logits):
    """Batch mean of KL(P || Q) in float64 via torch.distributions."""
    p = Categorical(logits=p_logits.double())
    q = Categorical(logits=q_logits.double())
    return kl_divergence(p, q).mean()


def _ref_js(p_logits, q_logits):
    p = torch.softmax(p_logits.double(), -1)
    q = torch.softmax(q_logits.double(), -1)
    m = 0.5 * (p + q)
    return (0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)).mean()


def _ref_mse(p_logits, q_logits):
    p = torch.softmax(p_logits.double(), -1)
    q = torch.softmax(q_logits.double(), -1)
    return (p - q).pow(2).sum(-1).mean()


def test_registry_names():
    assert set(DIVERGENCES) == set(NAMES)
    assert get_divergence("sym_kl") is symmetric_kl
    assert get_divergence("kl") is kl and get_divergence("js") is js and get_divergence("mse") is mse


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sym_kl_is_kl_both_ways(seed):
    p, q = _logits(seed), _logits(seed + 100)
    expected = _ref_kl(p, q) + _ref_kl(q, p)
    # by hand as well: sum_c p log(p/q) + q log(q/p)
    pp, qq = torch.softmax(p, -1), torch.softmax(q, -1)
    by_hand = ((pp * (pp / qq).log()).sum(-1) + (qq * (qq / pp).log()).sum(-1)).mean()
    assert torch.allclose(expected, by_hand, rtol=1e-12)
    got = symmetric_kl(p, q)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-7)
    assert torch.allclose(symmetric_kl(q, p).double(), expected, rtol=1e-5, atol=1e-7)  # symmetric


@pytest.mark.parametrize("seed", [0, 1])
def test_kl_js_mse_match_references(seed):
    p, q = _logits(seed), _logits(seed + 50)
    assert torch.allclose(kl(p, q).double(), _ref_kl(p, q), rtol=1e-5, atol=1e-7)
    assert torch.allclose(kl(q, p).double(), _ref_kl(q, p), rtol=1e-5, atol=1e-7)
    assert torch.allclose(js(p, q).double(), _ref_js(p, q), rtol=1e-5, atol=1e-7)
    assert torch.allclose(mse(p, q).double(), _ref_mse(p, q), rtol=1e-5, atol=1e-7)


def test_kl_is_not_symmetric_in_general():
    """kl is the one-way KL(P || Q): a swapped-argument bug would show here."""
    p = torch.tensor([[4.0, 0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
    assert abs(float(kl(p, q)) - float(kl(q, p))) > 1e-2
    assert torch.allclose(kl(p, q).double(), _ref_kl(p, q), rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_non_negative_and_zero_at_equal_inputs(name):
    fn = get_divergence(name)
    for seed in range(5):
        p, q = _logits(seed, scale=5.0), _logits(seed + 7, scale=5.0)
        assert float(fn(p, q)) >= 0.0
        assert float(fn(p, q)) > 1e-6  # different inputs give a positive value
        # equal inputs: exactly 0 up to float error far below any real signal
        assert abs(float(fn(p, p))) < 1e-12, f"{name}(p, p) = {float(fn(p, p)):.3g}, not 0"
        # shift invariance of softmax: logits + const is the same distribution
        assert abs(float(fn(p, p + 3.0))) < 1e-6


_REFERENCES = {"sym_kl": lambda p, q: _ref_kl(p, q) + _ref_kl(q, p), "kl": _ref_kl, "js": _ref_js, "mse": _ref_mse}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_classes", [2, 3])
def test_accurate_and_non_negative_at_perturbation_scale(name, num_classes):
    """SMART/SiFT compare logits that differ by ~1e-4..1e-2 (eps = 1e-5 raw for SMART).

    At that scale the float32 value must still be >= 0 and close to the float64 value,
    or R (and its gradient) is rounding noise.
    """
    fn, ref = get_divergence(name), _REFERENCES[name]
    p = _logits(11, shape=(8, num_classes), scale=2.0)
    direction = _logits(12, shape=(8, num_classes), scale=1.0)
    for size in (1e-2, 1e-3, 1e-4):
        q = p + size * direction
        got, want = float(fn(p, q)), float(ref(p, q))
        assert got >= 0.0, f"{name} is negative ({got:.3g}) for logits {size:g} apart"
        assert abs(got / want - 1) < 0.05, (
            f"{name}: float32 value {got:.4g} vs float64 {want:.4g} for logits {size:g} apart"
        )


@pytest.mark.parametrize("name", NAMES)
def test_gradient_flows_into_both_arguments(name):
    fn = get_divergence(name)
    p = _logits(3, dtype=torch.float32).requires_grad_(True)
    q = _logits(4, dtype=torch.float32).requires_grad_(True)
    fn(p, q).backward()
    assert p.grad is not None and q.grad is not None
    assert p.grad.abs().max() > 0, f"{name}: no gradient into the first argument"
    assert q.grad.abs().max() > 0, f"{name}: no gradient into the second argument"
    assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()


def test_sym_kl_gradient_matches_finite_differences():
    p = _logits(8, shape=(2, 3)).requires_grad_(True)
    q = _logits(9, shape=(2, 3))
    (grad,) = torch.autograd.grad(symmetric_kl(p, q), p)

    def ref(x):
        return _ref_kl(x, q) + _ref_kl(q, x)

    h = 1e-3
    for i in range(2):
        for j in range(3):
            e = torch.zeros_like(p)
            e[i, j] = h
            fd = (ref(p.detach() + e) - ref(p.detach() - e)) / (2 * h)
            assert abs(float(grad[i, j]) - float(fd)) < 1e-4 + 1e-3 * abs(float(fd))


@pytest.mark.parametrize("name", NAMES)
def test_float32_result_from_low_precision_inputs(name):
    fn = get_divergence(name)
    for dtype in (torch.bfloat16, torch.float16):
        p, q = _logits(5, dtype=dtype), _logits(6, dtype=dtype)
        out = fn(p, q)
        assert out.dtype == torch.float32, f"{name}: {dtype} inputs gave {out.dtype}"
        assert out.ndim == 0 and torch.isfinite(out)
        # computed from the (rounded) inputs in float32: same as feeding those values as float32
        assert torch.allclose(out, fn(p.float(), q.float()), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_extreme_logits_stay_finite(name):
    fn = get_divergence(name)
    p = torch.tensor([[60.0, -60.0], [0.0, 0.0]], dtype=torch.bfloat16, requires_grad=True)
    q = torch.tensor([[-60.0, 60.0], [0.0, 1.0]], dtype=torch.bfloat16, requires_grad=True)
    out = fn(p, q)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(p.grad.float()).all() and torch.isfinite(q.grad.float()).all()


def test_unknown_name_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="wasserstein"):
        get_divergence("wasserstein")
