"""The course's coding exercises, checked against the kit's own code.

Each ``check_*`` takes the function a student wrote, calls it on seeded random inputs,
compares the answer with siftkit's implementation (`siftkit.core` for the regularizer's
pieces and WiSE-FT's interpolation, `siftkit.methods.embedding_attack` for FreeLB's step,
`siftkit.core.metrics` and `siftkit.explore.analysis` for reading a result), and
returns a `Check`: whether it passed and, when it did not, *what* is wrong. The diagnosis
comes from comparing the answer with the usual mistakes, each computed on the same inputs
(adding delta in raw units, the unbiased std, rescaling a token that is inside the ball, a
single KL instead of both, ...); an answer that matches none of them gets the size of the
difference.

A check never raises for a wrong or unfinished answer (a student's ``NotImplementedError``
included): the notebook goes on, and the printed line says what to fix. Pass
``strict=True`` to raise `AssertionError` instead (an autograder's use). Every check
records its result in `RESULTS`; `summary()` lists them.

The notebooks hold the exercises and, in the teacher's version, the solutions between
nbgrader's ``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers (COURSE.md says how the
students' version is made).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from siftkit.core import metrics
from siftkit.core.divergences import kl, symmetric_kl
from siftkit.core.regularizers import SiFT
from siftkit.core.rules import Projected, project_onto_ball

HIDDEN = 384  # all-MiniLM-L6-v2's width: the checks use tensors shaped like its tokens
_ATOL = 1e-5
_RTOL = 1e-4


@dataclass
class Check:
    """One exercise's verdict: `passed`, and a message saying what is right or wrong."""

    exercise: str
    passed: bool
    message: str

    def __str__(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.exercise}: {self.message}"

    __repr__ = __str__

    def __bool__(self) -> bool:
        return self.passed


RESULTS: dict[str, Check] = {}


def summary() -> str:
    """One line per exercise checked in this kernel (the last check of each), and the count."""
    if not RESULTS:
        return "no exercise checked yet"
    passed = sum(c.passed for c in RESULTS.values())
    lines = [str(c) for c in RESULTS.values()]
    return "\n".join(lines + [f"{passed} of {len(RESULTS)} exercise(s) pass"])


def _finish(check: Check, strict: bool) -> Check:
    RESULTS[check.exercise] = check
    if strict and not check.passed:
        raise AssertionError(str(check))
    return check


def _call(exercise: str, fn: Callable, *args) -> tuple[Any, Check | None]:
    """The student's answer, or a failed Check saying why there is none."""
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, Check(exercise, False, "not written yet (the cell still raises NotImplementedError)")
    except Exception as exc:  # any error in the student's code is the answer's fault, said plainly
        return None, Check(exercise, False, f"your function raised {type(exc).__name__}: {exc}")


def _as_tensor(exercise: str, value: Any, like: torch.Tensor) -> tuple[torch.Tensor | None, Check | None]:
    if not isinstance(value, torch.Tensor):
        return None, Check(exercise, False, f"return a torch.Tensor; got {type(value).__name__}")
    if value.shape != like.shape:
        return None, Check(
            exercise,
            False,
            f"returns shape {tuple(value.shape)}; expected {tuple(like.shape)} (the same shape as the input)",
        )
    if not torch.isfinite(value).all():
        return None, Check(exercise, False, "the answer holds NaN or inf")
    return value.detach().double(), None


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a.double(), b.double(), rtol=_RTOL, atol=_ATOL * float(b.abs().max().clamp_min(1e-12))))


def _diagnose(
    exercise: str, answer: torch.Tensor, expected: torch.Tensor, mistakes: dict[str, torch.Tensor], what: str
) -> Check:
    if _close(answer, expected):
        return Check(exercise, True, what)
    for hint, wrong in mistakes.items():
        if wrong.shape == answer.shape and _close(answer, wrong):
            return Check(exercise, False, hint)
    diff = float((answer - expected.double()).abs().max())
    scale = float(expected.abs().max())
    return Check(
        exercise,
        False,
        f"differs from the kit's answer by up to {diff:.3g} (the answer's entries are up "
        f"to {scale:.3g}); compare your steps with the formula above",
    )


def _tokens(seed: int, batch: int = 2, length: int = 5) -> torch.Tensor:
    """Token vectors with very different scales and offsets per token, as real embeddings have."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(batch, length, 1, generator=g, dtype=torch.float64) * 3 + 0.2
    offset = torch.randn(batch, length, 1, generator=g, dtype=torch.float64)
    return torch.randn(batch, length, HIDDEN, generator=g, dtype=torch.float64) * scale + offset


# ----------------------------------------------------------------------------- 00: SiFT's perturbation


def check_sift_perturb(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, strict: bool = False) -> Check:
    """Exercise: ``fn(z, delta)`` -> the tensor SiFT feeds the model.

    Normalize each token, ``z_hat = (z - mu_t) / sigma_t`` (mean and population std over the
    hidden dimension), add delta there, and de-normalize: ``(z_hat + delta) * sigma_t + mu_t``.
    The kit computes ``mu_t, sigma_t`` with `SiFT.token_scale` and feeds ``z + sigma_t * delta``,
    which is the same tensor.
    """
    name = "SiFT's normalize-perturb-denormalize"
    z = _tokens(1)
    delta = torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.01
    mask = torch.ones(z.shape[:2], dtype=torch.bool)
    answer, failed = _call(name, fn, z.clone(), delta.clone())
    if failed is None:
        answer, failed = _as_tensor(name, answer, z)
    if failed is not None:
        return _finish(failed, strict)
    mu, sigma = SiFT(adv_epsilon=1e-2, adv_step_size=1e-3, adv_noise_std=1e-2).token_scale(z, mask)
    expected = z + sigma * delta
    mu_u, sd_u = z.mean(-1, keepdim=True), z.std(-1, keepdim=True)  # unbiased
    mu_s, sd_s = z.mean(1, keepdim=True), z.std(1, unbiased=False, keepdim=True)  # over the sequence
    mu_all, sd_all = z.mean(), z.std(unbiased=False)
    mistakes = {
        "you added delta in raw units: that is SMART's perturbation. SiFT adds delta to the normalized token "
        "(z - mu_t) / sigma_t and maps the result back": z + delta,
        "you returned the normalized tensor z_hat + delta: de-normalize it again (times sigma_t, plus mu_t)": (z - mu)
        / sigma
        + delta,
        "sigma_t is the population std (unbiased=False, as LayerNorm uses); you used the unbiased one": (z - mu_u)
        / sd_u
        * sd_u
        + mu_u
        + delta * sd_u,
        "mu_t and sigma_t are per token: take them over the hidden dimension (dim=-1, keepdim=True), not over "
        "the sequence": z + sd_s * delta,
        "mu_t and sigma_t are per token: you took one mean and std over the whole tensor": z + sd_all * delta,
        "you multiplied by sigma_t but forgot to add mu_t back (or subtracted it twice)": z - mu + sigma * delta,
    }
    del mu_s, mu_all
    # Compared as the push (answer - z): the push is 1e-2 of z, and a mistake in it (the unbiased
    # std differs by 0.13% in 384 dimensions) must not hide under z's rounding.
    return _finish(
        _diagnose(
            name,
            answer - z,
            expected - z,
            {k: v - z for k, v in mistakes.items()},
            "matches the kit (z + sigma_t * delta, with SiFT.token_scale's sigma_t)",
        ),
        strict,
    )


# ----------------------------------------------------------------------------- 00: the projection


def check_projection(fn: Callable[[torch.Tensor, float, str], torch.Tensor], *, strict: bool = False) -> Check:
    """Exercise: ``fn(delta, epsilon, norm)`` -> each token's delta projected onto its ball.

    ``norm="inf"``: the ball max_i |delta_t,i| <= epsilon, so every coordinate is clipped to
    [-epsilon, epsilon]. ``norm="l2"``: ||delta_t|| <= epsilon, so a token outside is scaled
    down to the surface and a token inside stays as it is. Compared with
    `siftkit.core.rules.project_onto_ball` for both norms.
    """
    name = "projection onto the l-inf and l2 balls"
    g = torch.Generator().manual_seed(3)
    # per-token sizes from well inside to far outside the ball, in both norms
    delta = torch.randn(2, 6, HIDDEN, generator=g, dtype=torch.float64)
    delta = delta * torch.logspace(-3, 1, 12, dtype=torch.float64).reshape(2, 6, 1)
    for norm, epsilon in (("inf", 0.05), ("l2", 0.5)):
        answer, failed = _call(name, fn, delta.clone(), epsilon, norm)
        if failed is None:
            answer, failed = _as_tensor(name, answer, delta)
        if failed is not None:
            return _finish(failed, strict)
        expected = project_onto_ball(delta, epsilon, norm)
        inf_len = delta.abs().amax(-1, keepdim=True)
        l2_len = delta.norm(dim=-1, keepdim=True)
        every = {"inf": delta * epsilon / inf_len, "l2": delta * epsilon / l2_len}[norm]
        mistakes = {
            f"[{norm}] nothing was projected: the answer is delta itself": delta,
            f"[{norm}] every token was scaled to the surface: a token already inside the ball must stay as it is "
            f"(scale by min(1, epsilon / ||delta_t||))": every,
            f"[{norm}] you projected onto the other norm's ball": project_onto_ball(
                delta, epsilon, "l2" if norm == "inf" else "inf"
            ),
            f"[{norm}] the ball is per token: take the norm over the hidden dimension (dim=-1), not over the whole "
            f"tensor": delta * min(1.0, epsilon / float(delta.abs().max() if norm == "inf" else delta.norm())),
        }
        if norm == "inf":
            mistakes[
                "[inf] the l-inf ball's projection clips each coordinate to [-epsilon, epsilon] (torch.clamp); "
                "scaling the whole token down also shrinks coordinates that were inside"
            ] = delta * (epsilon / inf_len).clamp(max=1.0)
        check = _diagnose(name, answer, expected, mistakes, "")
        if not check.passed:
            if not check.message.startswith("["):
                check.message = f"[{norm}] {check.message}"
            return _finish(check, strict)
    return _finish(Check(name, True, "matches siftkit.core.rules.project_onto_ball for norm 'inf' and 'l2'"), strict)


# ----------------------------------------------------------------------------- 00: one ascent step


def check_ascent_step(
    fn: Callable[[torch.Tensor, torch.Tensor, float, float, str], torch.Tensor], *, strict: bool = False
) -> Check:
    """Exercise: ``fn(delta, g, step_size, epsilon, norm)`` -> delta after one projected ascent step.

    ``delta + step_size * g_t / ||g_t||`` per token (the unit direction in ``norm``: for
    "inf", g_t divided by its largest |entry|), then projected onto the epsilon-ball. Compared
    with the ``projected`` rule's own step (`siftkit.core.rules.Projected.step`).
    """
    name = "one projected ascent step"
    g_ = torch.Generator().manual_seed(4)
    delta = torch.randn(2, 5, HIDDEN, generator=g_, dtype=torch.float64) * 0.004
    grad = torch.randn(2, 5, HIDDEN, generator=g_, dtype=torch.float64) * torch.logspace(
        -8, 1, 10, dtype=torch.float64
    ).reshape(2, 5, 1)  # gradients of very different sizes per token
    step, epsilon = 0.01, 0.01
    for norm in ("inf", "l2"):
        answer, failed = _call(name, fn, delta.clone(), grad.clone(), step, epsilon, norm)
        if failed is None:
            answer, failed = _as_tensor(name, answer, delta)
        if failed is not None:
            return _finish(failed, strict)
        knobs = SimpleNamespace(adv_step_size=step, adv_epsilon=epsilon, adv_norm=norm)
        expected = Projected().step(delta, grad, knobs)
        inf_len = grad.abs().amax(-1, keepdim=True)
        l2_len = grad.norm(dim=-1, keepdim=True)
        unit = grad / (inf_len if norm == "inf" else l2_len)
        other = grad / (l2_len if norm == "inf" else inf_len)
        mistakes = {
            f"[{norm}] the step is not normalized: use g_t / ||g_t|| per token, so every token moves by step_size "
            f"whatever the size of its gradient": project_onto_ball(delta + step * grad, epsilon, norm),
            f"[{norm}] no projection after the step: project delta + step_size * unit(g) back onto the "
            f"epsilon-ball": delta + step * unit,
            f"[{norm}] that is a descent step (delta - ...): the perturbation climbs the divergence, delta + "
            f"step_size * unit(g)": project_onto_ball(delta - step * unit, epsilon, norm),
            f"[{norm}] the gradient was normalized in the other norm; unit(g) must have norm 1 in '{norm}'": project_onto_ball(
                delta + step * other, epsilon, norm
            ),
            f"[{norm}] g was normalized over the whole tensor; normalize each token's g_t on its own": project_onto_ball(
                delta + step * grad / float(grad.abs().max() if norm == "inf" else grad.norm()), epsilon, norm
            ),
        }
        if norm == "inf":
            mistakes[
                "[inf] sign(g) is FGSM's step; the kit's unit direction in the l-inf norm is g_t / max|g_t| "
                "(its largest entry is 1, the others keep their proportions)"
            ] = project_onto_ball(delta + step * grad.sign(), epsilon, norm)
        check = _diagnose(name, answer, expected, mistakes, "")
        if not check.passed:
            if not check.message.startswith("["):
                check.message = f"[{norm}] {check.message}"
            return _finish(check, strict)
    return _finish(
        Check(
            name, True, "matches the projected rule's step (siftkit.core.rules.Projected.step) for norm 'inf' and 'l2'"
        ),
        strict,
    )


# ----------------------------------------------------------------------------- 00: the symmetric KL


def check_sym_kl(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, strict: bool = False) -> Check:
    """Exercise: ``fn(p_logits, q_logits)`` -> KL(P || Q) + KL(Q || P), averaged over the batch.

    P and Q are the softmax of each row of logits. Compared with
    `siftkit.core.divergences.symmetric_kl`, value and gradient: the regularizer trains both
    branches, so the gradient must reach both arguments.
    """
    name = "symmetric KL"
    g = torch.Generator().manual_seed(5)
    p_logits = torch.randn(8, 3, generator=g, dtype=torch.float64) * 2
    q_logits = p_logits + torch.randn(8, 3, generator=g, dtype=torch.float64) * 0.7
    p_in, q_in = p_logits.clone().requires_grad_(True), q_logits.clone().requires_grad_(True)
    answer, failed = _call(name, fn, p_in, q_in)
    if failed is not None:
        return _finish(failed, strict)
    if not isinstance(answer, torch.Tensor):
        return _finish(Check(name, False, f"return a torch.Tensor; got {type(answer).__name__}"), strict)
    p_ref, q_ref = p_logits.clone().requires_grad_(True), q_logits.clone().requires_grad_(True)
    expected = symmetric_kl(p_ref, q_ref)
    if answer.dim() != 0:
        per_example = answer.detach().double().reshape(-1)
        if per_example.numel() == p_logits.shape[0] and _close(per_example.mean(), expected.detach()):
            return _finish(
                Check(name, False, "returns one value per example: average them over the batch (a scalar)"), strict
            )
        return _finish(Check(name, False, f"return a scalar (0-d tensor); got shape {tuple(answer.shape)}"), strict)
    value = answer.detach().double()
    p_prob, q_prob = p_logits.softmax(-1), q_logits.softmax(-1)
    mistakes = {
        "that is KL(P || Q) alone: the symmetric KL adds KL(Q || P)": kl(p_logits, q_logits),
        "that is KL(Q || P) alone: the symmetric KL adds KL(P || Q)": kl(q_logits, p_logits),
        "you summed over the batch: average over it": symmetric_kl(p_logits, q_logits) * p_logits.shape[0],
        "the inputs are logits: turn them into log-probabilities with log_softmax first (you used the logits "
        "as log-probabilities)": ((p_logits.exp() - q_logits.exp()) * (p_logits - q_logits)).sum(-1).mean(),
        "the inputs are logits: take softmax over the classes (dim=-1), not over the batch": (
            (p_logits.softmax(0) - q_logits.softmax(0)) * (p_logits.log_softmax(0) - q_logits.log_softmax(0))
        )
        .sum(-1)
        .mean(),
        "KL is in nats here: natural logarithm, not log2": symmetric_kl(p_logits, q_logits) / math.log(2),
        "half of the symmetric KL: KL(P || Q) + KL(Q || P) is not averaged over the two directions": symmetric_kl(
            p_logits, q_logits
        )
        / 2,
    }
    del p_prob, q_prob
    check = _diagnose(
        name,
        value.reshape(()),
        expected.detach().double(),
        {k: v.detach().double().reshape(()) for k, v in mistakes.items()},
        "",
    )
    if not check.passed:
        return _finish(check, strict)
    if not answer.requires_grad:
        return _finish(
            Check(
                name,
                False,
                "the value is right but carries no gradient: compute it with torch "
                "operations on the logits, without .detach() or .item()",
            ),
            strict,
        )
    grads = torch.autograd.grad(answer, (p_in, q_in), allow_unused=True)
    ref = torch.autograd.grad(expected, (p_ref, q_ref))
    for side, mine, theirs in zip(("p_logits", "q_logits"), grads, ref):
        if mine is None or float(mine.abs().max()) == 0.0:
            return _finish(
                Check(
                    name,
                    False,
                    f"the value is right but no gradient reaches {side}: R trains both "
                    f"branches, so do not detach either argument",
                ),
                strict,
            )
        if not _close(mine.double(), theirs.double()):
            return _finish(
                Check(
                    name,
                    False,
                    f"the value is right but the gradient into {side} differs from the kit's (a detached piece?)",
                ),
                strict,
            )
    return _finish(
        Check(name, True, "matches siftkit.core.divergences.symmetric_kl, value and gradient into both arguments"),
        strict,
    )


# ----------------------------------------------------------------------------- 02: WiSE-FT's interpolation


def _state_dict(seed: int) -> dict[str, torch.Tensor]:
    """A small encoder's state dict (float32, the shapes of a table, a weight, a bias, a LayerNorm)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "embeddings.word_embeddings.weight": (30, 16),
        "encoder.layer.0.attention.self.query.weight": (16, 16),
        "encoder.layer.0.attention.self.query.bias": (16,),
        "encoder.layer.0.output.LayerNorm.weight": (16,),
    }
    return {k: torch.randn(shape, generator=g) for k, shape in shapes.items()}


def _flat_state(state: Mapping[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    """The entries `keys` of a state dict as one float64 vector (compared all at once)."""
    return torch.cat([state[k].double().reshape(-1) for k in keys])


def check_wise_ft(fn: Callable[[dict, dict, float], dict], *, strict: bool = False) -> Check:
    """Exercise: ``fn(theta_0, theta_1, alpha)`` -> ``{name: (1 - alpha) theta_0[name] + alpha theta_1[name]}``.

    theta_0 are the weights fine-tuning started from, theta_1 the fine-tuned ones; alpha = 1 is
    the fine-tuned model. Compared with `siftkit.core.weight_space.interpolate` (what a run with
    ``wise_ft`` evaluates at every alpha of its curve) at alpha 0.3, 0, 1 and 0.75, entry by
    entry; theta_0 and theta_1 must come back unchanged (the run interpolates from them again
    for the next alpha).
    """
    from siftkit.core.weight_space import interpolate

    name = "WiSE-FT interpolation"
    theta_0, theta_1 = _state_dict(11), _state_dict(12)
    for alpha in (0.3, 0.0, 1.0, 0.75):
        given_0 = {k: v.clone() for k, v in theta_0.items()}
        given_1 = {k: v.clone() for k, v in theta_1.items()}
        answer, failed = _call(name, fn, given_0, given_1, alpha)
        if failed is not None:
            return _finish(failed, strict)
        for side, given, original in (("theta_0", given_0, theta_0), ("theta_1", given_1, theta_1)):
            if any(not torch.equal(given[k], original[k]) for k in original):
                return _finish(
                    Check(
                        name,
                        False,
                        f"[alpha = {alpha}] you changed {side} in place: build new tensors "
                        f"(a run interpolates from the same theta_0 and theta_1 for "
                        f"every alpha of its curve)",
                    ),
                    strict,
                )
        if not isinstance(answer, Mapping):
            return _finish(
                Check(name, False, f"return a dict of tensors, one per entry of theta_0; got {type(answer).__name__}"),
                strict,
            )
        missing, extra = sorted(set(theta_0) - set(answer)), sorted(set(answer) - set(theta_0))
        if missing or extra:
            what = (
                (f"lacks {', '.join(missing)}" if missing else "")
                + (" and " if missing and extra else "")
                + (f"has entries theta_0 does not: {', '.join(extra)}" if extra else "")
            )
            return _finish(Check(name, False, f"the answer {what}: interpolate every entry of the state dicts"), strict)
        keys = list(theta_0)
        values = []
        for k in keys:
            value, failed = _as_tensor(name, answer[k], theta_0[k])
            if failed is not None:
                failed.message = f"entry {k}: {failed.message}"
                return _finish(failed, strict)
            values.append(value.reshape(-1))
        flat = torch.cat(values)
        t0, t1 = _flat_state(theta_0, keys), _flat_state(theta_1, keys)
        expected = _flat_state(interpolate(theta_0, theta_1, alpha), keys)
        mistakes = {
            f"[alpha = {alpha}] alpha weighs theta_0 here: alpha is the weight of the fine-tuned theta_1 (alpha = 1 "
            f"is the fine-tuned model, alpha = 0 the weights it started from)": alpha * t0 + (1 - alpha) * t1,
            f"[alpha = {alpha}] theta_0 + alpha * theta_1: theta_0's weight is (1 - alpha), so that the two weights "
            f"sum to 1": t0 + alpha * t1,
            f"[alpha = {alpha}] the mean of theta_0 and theta_1 whatever alpha: weigh them (1 - alpha) and alpha": (
                t0 + t1
            )
            / 2,
            f"[alpha = {alpha}] alpha * (theta_1 - theta_0) is the step from theta_0; add theta_0 to it": alpha
            * (t1 - t0),
        }
        check = _diagnose(name, flat, expected, mistakes, "")
        if not check.passed:
            if not check.message.startswith("["):
                check.message = f"[alpha = {alpha}] {check.message}"
            return _finish(check, strict)
    return _finish(
        Check(
            name,
            True,
            "matches siftkit.core.weight_space.interpolate at alpha 0, 0.3, 0.75 and 1, "
            "entry by entry, with theta_0 and theta_1 left as they were",
        ),
        strict,
    )


# ----------------------------------------------------------------------------- 02: the family, FreeLB's step


def check_freelb_step(fn: Callable[..., torch.Tensor], *, strict: bool = False) -> Check:
    """Exercise: ``fn(delta, g, mask, adv_lr, max_norm)`` -> FreeLB's delta after one ascent step
    and its ball, in the l2 norm (FreeLB's default).

    ``delta + adv_lr * g_i / ||g_i||``, with ``g`` zeroed at padding (``mask`` 0) and
    ``||g_i||`` the l2 norm of example i's gradient over its WHOLE sequence (all L x d entries
    at once, not per token); then, for ``max_norm > 0``, an example whose delta has
    ``||delta_i|| > max_norm`` (again over the whole example) rescaled onto that norm;
    ``max_norm = 0`` is no ball. Compared with `siftkit.methods.embedding_attack`'s
    `ascent_step` and `project` (what FreeLB, PGD-K and FreeAT run).
    """
    from siftkit.methods.embedding_attack import ascent_step, project

    name = "FreeLB's ascent step and ball"
    g_ = torch.Generator().manual_seed(13)
    batch, length = 3, 6
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 4:] = 0  # two padded positions
    mask[2, 2:] = 0  # four
    real = mask.unsqueeze(-1).float()
    delta = torch.randn(batch, length, HIDDEN, generator=g_) * real
    # starts of whole-sequence norm 0.02, 0.3 and 0.6: after the step, inside, inside and outside a ball of 0.35
    delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1) * torch.tensor([0.02, 0.3, 0.6]).view(-1, 1, 1)
    # gradients of very different sizes per token and per example, and not zero at padding
    grad = torch.randn(batch, length, HIDDEN, generator=g_) * torch.logspace(-3, 1, batch * length).view(
        batch, length, 1
    )
    adv_lr = 0.1
    for max_norm in (0.35, 0.0):
        answer, failed = _call(name, fn, delta.clone(), grad.clone(), mask.clone(), adv_lr, max_norm)
        if failed is None:
            answer, failed = _as_tensor(name, answer, delta)
        if failed is not None:
            return _finish(failed, strict)
        expected = project(ascent_step(delta, grad, adv_lr, "l2", mask), max_norm, "l2")
        g = grad * real
        ball = partial(project, max_norm=max_norm, norm_type="l2")
        per_token = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        token_ball = d_moved = delta + adv_lr * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)
        if max_norm > 0:
            token_ball = d_moved * (max_norm / d_moved.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        label = f"[max_norm = {max_norm:g}]"
        mistakes = {
            f"{label} each token's gradient was normalized on its own (the per-token rule of SMART and SiFT in 00); "
            f"FreeLB divides by the l2 norm of the example's whole gradient, all L x d entries at once": ball(
                delta + adv_lr * per_token
            ),
            f"{label} padding moved: zero g where mask is 0 before the step (padded positions must stay at 0)": ball(
                delta + adv_lr * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1)
            ),
            f"{label} g was normalized over the whole batch; normalize each example's g_i on its own": ball(
                delta + adv_lr * g / g.norm()
            ),
            f"{label} g was normalized by its largest |entry| (the linf rule); FreeLB's default norm is l2": ball(
                delta + adv_lr * g / g.flatten(1).abs().amax(dim=1).view(-1, 1, 1)
            ),
            f"{label} that is a descent step (delta - ...): the perturbation climbs the loss, delta + adv_lr * g_i / "
            f"||g_i||": ball(delta - adv_lr * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)),
            f"{label} the step was not normalized: divide g_i by the norm of example i's gradient": ball(
                delta + adv_lr * g
            ),
        }
        if max_norm > 0:
            mistakes.update(
                {
                    f"{label} no ball after the step: rescale an example with ||delta_i|| > max_norm onto that norm": d_moved,
                    f"{label} the ball is per example: rescale delta_i as a whole when its norm over all L x d entries "
                    f"exceeds max_norm, not each token": token_ball,
                    f"{label} every example was scaled onto the ball's surface: one inside the ball stays as it is": d_moved
                    * (max_norm / d_moved.flatten(1).norm(dim=1)).view(-1, 1, 1),
                }
            )
        else:
            mistakes[
                f"{label} max_norm 0 means no ball (FreeLB's default adv_max_norm 0): return the step as it is"
            ] = torch.zeros_like(delta)
        check = _diagnose(name, answer, expected.double(), {k: v.double() for k, v in mistakes.items()}, "")
        if not check.passed:
            if not check.message.startswith("["):
                check.message = f"{label} {check.message}"
            return _finish(check, strict)
    return _finish(
        Check(
            name,
            True,
            "matches siftkit.methods.embedding_attack's ascent_step and project (l2), with a ball and without",
        ),
        strict,
    )


# ----------------------------------------------------------------------------- 05: reading a result


def _labels(seed: int, n: int, k: int, weights) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(k, size=n, p=np.asarray(weights) / np.sum(weights))


def check_majority_share(fn: Callable[[Any], float], *, strict: bool = False) -> Check:
    """Exercise: ``fn(labels)`` -> the share of the most frequent label (a classifier's floor).

    Compared with `siftkit.explore.analysis.majority_share`, which 05's table of sets uses.
    """
    from siftkit.explore.analysis import majority_share

    name = "majority-label share"
    for labels in (_labels(6, 250, 3, [5, 3, 2]), _labels(7, 41, 2, [1, 4])):
        answer, failed = _call(name, fn, labels.copy())
        if failed is not None:
            return _finish(failed, strict)
        expected = majority_share(labels)
        counts = np.bincount(labels)
        try:
            value = float(answer)
        except (TypeError, ValueError):
            return _finish(Check(name, False, f"return one number; got {type(answer).__name__}"), strict)
        if math.isclose(value, expected, rel_tol=1e-9):
            continue
        if value == counts.max():
            hint = "that is the count of the most frequent label: divide by the number of labels"
        elif value == int(np.argmax(counts)):
            hint = "that is the most frequent label itself: return its share of all labels"
        elif math.isclose(value, counts.min() / len(labels)):
            hint = "that is the least frequent label's share: take the most frequent"
        elif math.isclose(value, 1 / len(counts)):
            hint = "1 / (number of classes) is chance for balanced labels; the floor is the majority label's share"
        else:
            hint = f"got {value:.4g}, expected {expected:.4g}"
        return _finish(Check(name, False, hint), strict)
    return _finish(Check(name, True, "matches siftkit.explore.analysis.majority_share"), strict)


def check_yardstick(fn: Callable[[float, int], float], *, strict: bool = False) -> Check:
    """Exercise: ``fn(p, n)`` -> twice the binomial standard error of an accuracy p on n texts.

    ``2 * sqrt(p (1 - p) / n)``: the yardstick 05's reading puts beside every difference.
    Compared with `siftkit.explore.analysis.binomial_yardstick`.
    """
    from siftkit.explore.analysis import binomial_yardstick

    name = "binomial yardstick"
    for p, n in ((0.83, 1000), (0.5, 16), (0.97, 240)):
        answer, failed = _call(name, fn, p, n)
        if failed is not None:
            return _finish(failed, strict)
        try:
            value = float(answer)
        except (TypeError, ValueError):
            return _finish(Check(name, False, f"return one number; got {type(answer).__name__}"), strict)
        expected = binomial_yardstick(p, n)
        if math.isclose(value, expected, rel_tol=1e-9):
            continue
        se = math.sqrt(p * (1 - p) / n)
        wrong = {
            se: "that is one standard error: the yardstick is twice it",
            2 * p * (1 - p) / n: "take the square root: the standard error is sqrt(p (1 - p) / n)",
            2 * math.sqrt(p * (1 - p)) / n: "divide by n inside the square root: sqrt(p (1 - p) / n)",
            2 * math.sqrt(p * (1 - p) * n): "n belongs in the denominator: sqrt(p (1 - p) / n)",
            1.96 * se: "1.96 standard errors is the 95% normal interval; the kit's yardstick is 2 of them",
        }
        hint = next(
            (h for v, h in wrong.items() if math.isclose(value, v, rel_tol=1e-9)),
            f"for p = {p}, n = {n}: got {value:.4g}, expected {expected:.4g}",
        )
        return _finish(Check(name, False, hint), strict)
    return _finish(Check(name, True, "matches siftkit.explore.analysis.binomial_yardstick"), strict)


def check_mcc(fn: Callable[[Any, Any, int], float], *, strict: bool = False) -> Check:
    """Exercise: ``fn(preds, labels, num_classes)`` -> the Matthews correlation (K classes).

    Compared with `siftkit.core.metrics.multiclass_mcc` (for two classes it equals the binary
    MCC), on two and three classes and on a classifier that predicts one label only (MCC 0).
    """
    name = "Matthews correlation"
    cases = []
    for seed, k in ((8, 2), (9, 3)):
        labels = _labels(seed, 300, k, [3] + [2] * (k - 1))
        rng = np.random.default_rng(seed + 100)
        preds = np.where(rng.random(300) < 0.7, labels, rng.integers(0, k, 300))
        cases.append((preds, labels, k))
    cases.append((np.zeros(50, dtype=int), _labels(10, 50, 2, [1, 1]), 2))  # one label only
    for preds, labels, k in cases:
        answer, failed = _call(name, fn, preds.copy(), labels.copy(), k)
        if failed is not None:
            return _finish(failed, strict)
        try:
            value = float(answer)
        except (TypeError, ValueError):
            return _finish(Check(name, False, f"return one number; got {type(answer).__name__}"), strict)
        expected = metrics.multiclass_mcc(preds, labels, k)
        if math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12):
            continue
        if math.isnan(value):
            hint = (
                "NaN for a classifier that predicts one label: the denominator is 0 there, and the MCC is defined as 0"
                if len(set(preds.tolist())) == 1
                else "the answer is NaN"
            )
        elif k > 2 and math.isclose(value, metrics.matthews_corrcoef(preds != 0, labels != 0), rel_tol=1e-9):
            hint = "that is the binary MCC of 'label 0 or not': with 3 classes use the K-class formula"
        elif math.isclose(value, metrics.accuracy(preds, labels), rel_tol=1e-9):
            hint = "that is the accuracy; the MCC correlates predictions and labels (0: chance, 1: perfect)"
        else:
            hint = f"on {k} classes: got {value:.4g}, expected {expected:.4g}"
        return _finish(Check(name, False, hint), strict)
    return _finish(
        Check(
            name, True, "matches siftkit.core.metrics.multiclass_mcc on 2 and 3 classes and on a one-label classifier"
        ),
        strict,
    )


CHECKS: dict[str, Callable[..., Check]] = {
    "sift_perturb": check_sift_perturb,
    "project": check_projection,
    "ascent_step": check_ascent_step,
    "sym_kl": check_sym_kl,
    "majority_share": check_majority_share,
    "yardstick": check_yardstick,
    "mcc": check_mcc,
    "wise_ft": check_wise_ft,
    "freelb_step": check_freelb_step,
}
