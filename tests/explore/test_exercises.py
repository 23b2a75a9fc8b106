"""The course's exercise checks (siftkit.explore.exercises): a right answer passes, each usual
mistake fails with its own diagnosis, and the notebooks' solution cells pass while the students'
version made from them by nbgrader's ClearSolutions fails every check."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from helpers import STUDENT_COMMAND

from siftkit.explore import exercises as ex

REPO = Path(__file__).resolve().parents[2]
EXERCISE_NOTEBOOKS = {
    "00_tour": ("sift_perturb", "project", "ascent_step", "sym_kl"),
    "02_twitter_to_uci": ("wise_ft", "freelb_step"),
    "05_your_shift": ("majority_share", "yardstick", "mcc"),
}


# ----------------------------------------------------------------------------- right answers


def sift_perturb(z, delta):
    mu = z.mean(-1, keepdim=True)
    sigma = z.std(-1, unbiased=False, keepdim=True)
    return ((z - mu) / sigma + delta) * sigma + mu


def project(delta, epsilon, norm):
    if norm == "inf":
        return delta.clamp(-epsilon, epsilon)
    length = delta.norm(dim=-1, keepdim=True)
    return delta * (epsilon / length).clamp(max=1.0)


def ascent_step(delta, g, step_size, epsilon, norm):
    length = g.abs().amax(-1, keepdim=True) if norm == "inf" else g.norm(dim=-1, keepdim=True)
    return project(delta + step_size * g / length, epsilon, norm)


def sym_kl(p_logits, q_logits):
    log_p, log_q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()


def majority_share(labels):
    return np.bincount(np.asarray(labels)).max() / len(labels)


def yardstick(p, n):
    return 2 * math.sqrt(p * (1 - p) / n)


def mcc(preds, labels, num_classes):
    c = np.zeros((num_classes, num_classes))
    np.add.at(c, (np.asarray(labels), np.asarray(preds)), 1)
    t, p, s, n = c.sum(1), c.sum(0), np.trace(c), c.sum()
    denom = math.sqrt((n * n - p @ p) * (n * n - t @ t))
    return 0.0 if denom == 0 else (s * n - p @ t) / denom


def wise_ft(theta_0, theta_1, alpha):
    return {k: (1 - alpha) * theta_0[k] + alpha * theta_1[k] for k in theta_0}


def freelb_step(delta, g, mask, adv_lr, max_norm):
    g = g * mask.unsqueeze(-1)
    delta = delta + adv_lr * g / g.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)
    if max_norm > 0:
        delta = delta * (max_norm / delta.flatten(1).norm(dim=1)).clamp(max=1.0).view(-1, 1, 1)
    return delta


RIGHT = {
    "sift_perturb": sift_perturb,
    "project": project,
    "ascent_step": ascent_step,
    "sym_kl": sym_kl,
    "majority_share": majority_share,
    "yardstick": yardstick,
    "mcc": mcc,
    "wise_ft": wise_ft,
    "freelb_step": freelb_step,
}


@pytest.mark.parametrize("name", list(RIGHT))
def test_a_right_answer_passes(name):
    check = ex.CHECKS[name](RIGHT[name])
    assert check.passed, str(check)
    assert str(check).startswith("✓ ") and ex.RESULTS[check.exercise] is check


def test_an_unwritten_answer_fails_and_does_not_raise():
    def unwritten(*args):
        raise NotImplementedError()

    for name, check in ex.CHECKS.items():
        result = check(unwritten)
        assert not result.passed and "not written yet" in result.message, name
        with pytest.raises(AssertionError, match="not written yet"):
            check(unwritten, strict=True)
    assert f"0 of {len(ex.CHECKS)} exercise(s) pass" in ex.summary() and len(ex.CHECKS) == 9


# ----------------------------------------------------------------------------- each mistake, its diagnosis


def _fails(name, fn, expected):
    check = ex.CHECKS[name](fn)
    assert not check.passed, f"{name}: a wrong answer passed"
    assert expected in check.message, f"{name}: {check.message!r} does not say {expected!r}"


def test_sift_perturb_mistakes_are_named():
    _fails("sift_perturb", lambda z, d: z + d, "that is SMART's perturbation")
    _fails(
        "sift_perturb",
        lambda z, d: (z - z.mean(-1, keepdim=True)) / z.std(-1, unbiased=False, keepdim=True) + d,
        "de-normalize it again",
    )
    _fails("sift_perturb", lambda z, d: z + z.std(-1, keepdim=True) * d, "population std")
    _fails("sift_perturb", lambda z, d: z + z.std(1, unbiased=False, keepdim=True) * d, "over the hidden dimension")
    _fails("sift_perturb", lambda z, d: z + z.std(unbiased=False) * d, "whole tensor")
    _fails("sift_perturb", lambda z, d: z[..., :10], "returns shape")
    _fails("sift_perturb", lambda z, d: z * 1.01 + d, "differs from the kit's answer by up to")


def test_projection_mistakes_are_named():
    _fails("project", lambda d, e, n: d, "nothing was projected")
    _fails(
        "project",
        lambda d, e, n: d.clamp(-e, e) if n == "inf" else d * e / d.norm(dim=-1, keepdim=True),
        "[l2] every token was scaled to the surface",
    )
    _fails(
        "project",
        lambda d, e, n: d * (e / d.abs().amax(-1, keepdim=True)).clamp(max=1.0) if n == "inf" else project(d, e, n),
        "[inf] the l-inf ball's projection clips each coordinate",
    )
    _fails("project", lambda d, e, n: project(d, e, "l2" if n == "inf" else "inf"), "other norm's ball")
    _fails(
        "project",
        lambda d, e, n: d * min(1.0, e / float(d.norm())) if n == "l2" else project(d, e, n),
        "[l2] the ball is per token",
    )


def test_ascent_step_mistakes_are_named():
    _fails("ascent_step", lambda d, g, s, e, n: project(d + s * g, e, n), "the step is not normalized")
    _fails("ascent_step", lambda d, g, s, e, n: d + s * g / g.abs().amax(-1, keepdim=True), "[inf] no projection")
    _fails(
        "ascent_step",
        lambda d, g, s, e, n: project(d + s * g.sign(), e, n) if n == "inf" else ascent_step(d, g, s, e, n),
        "FGSM",
    )
    _fails("ascent_step", lambda d, g, s, e, n: ascent_step(d, -g, s, e, n), "descent step")
    _fails(
        "ascent_step",
        lambda d, g, s, e, n: (
            project(d + s * g / g.norm(dim=-1, keepdim=True), e, n) if n == "inf" else ascent_step(d, g, s, e, n)
        ),
        "[inf] the gradient was normalized in the other norm",
    )


def test_sym_kl_mistakes_are_named():
    def one_way(p, q):
        lp, lq = p.log_softmax(-1), q.log_softmax(-1)
        return (lp.exp() * (lp - lq)).sum(-1).mean()

    _fails("sym_kl", one_way, "that is KL(P || Q) alone")
    _fails("sym_kl", lambda p, q: sym_kl(p, q) * p.shape[0], "summed over the batch")
    _fails("sym_kl", lambda p, q: ((p.exp() - q.exp()) * (p - q)).sum(-1).mean(), "log_softmax first")
    _fails("sym_kl", lambda p, q: sym_kl(p, q) / math.log(2), "natural logarithm")
    _fails(
        "sym_kl",
        lambda p, q: ((p.softmax(-1) - q.softmax(-1)) * (p.log_softmax(-1) - q.log_softmax(-1))).sum(-1),
        "average them over the batch",
    )
    _fails("sym_kl", lambda p, q: sym_kl(p.detach(), q.detach()), "carries no gradient")
    _fails("sym_kl", lambda p, q: sym_kl(p, q.detach()), "no gradient reaches q_logits")
    _fails("sym_kl", lambda p, q: float(sym_kl(p, q)), "return a torch.Tensor")


def test_wise_ft_mistakes_are_named():
    _fails("wise_ft", lambda t0, t1, a: {k: a * t0[k] + (1 - a) * t1[k] for k in t0}, "alpha weighs theta_0 here")
    _fails("wise_ft", lambda t0, t1, a: {k: t0[k] + a * t1[k] for k in t0}, "theta_0's weight is (1 - alpha)")
    _fails("wise_ft", lambda t0, t1, a: {k: (t0[k] + t1[k]) / 2 for k in t0}, "whatever alpha")
    _fails("wise_ft", lambda t0, t1, a: {k: a * (t1[k] - t0[k]) for k in t0}, "add theta_0 to it")
    _fails(
        "wise_ft",
        lambda t0, t1, a: {k: v for k, v in wise_ft(t0, t1, a).items() if "bias" not in k},
        "the answer lacks encoder.layer.0.attention.self.query.bias",
    )
    _fails("wise_ft", lambda t0, t1, a: [wise_ft(t0, t1, a)[k] for k in t0], "return a dict of tensors")

    def in_place(t0, t1, a):
        for k in t0:
            t0[k].mul_(1 - a).add_(a * t1[k])
        return t0

    _fails("wise_ft", in_place, "you changed theta_0 in place")


def test_freelb_step_mistakes_are_named():
    def per_token(d, g, m, lr, mx):
        g = g * m.unsqueeze(-1)
        return freelb_step(d + lr * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-8), g * 0, m, 0.0, mx)

    def token_ball(d, g, m, lr, mx):
        moved = freelb_step(d, g, m, lr, 0.0)
        return moved * (mx / moved.norm(dim=-1, keepdim=True)).clamp(max=1.0) if mx > 0 else moved

    _fails("freelb_step", per_token, "each token's gradient was normalized on its own")
    _fails("freelb_step", lambda d, g, m, lr, mx: freelb_step(d, g, m * 0 + 1, lr, mx), "padding moved")
    _fails("freelb_step", lambda d, g, m, lr, mx: freelb_step(d, g, m, lr, 0.0), "[max_norm = 0.35] no ball")
    _fails("freelb_step", token_ball, "the ball is per example")
    _fails("freelb_step", lambda d, g, m, lr, mx: freelb_step(d, -g, m, lr, mx), "descent step")
    _fails(
        "freelb_step",
        lambda d, g, m, lr, mx: freelb_step(d, g, m, lr, mx) if mx > 0 else d * 0,
        "max_norm 0 means no ball",
    )


def test_reading_mistakes_are_named():
    _fails("majority_share", lambda y: np.bincount(y).max(), "divide by the number of labels")
    _fails("majority_share", lambda y: int(np.argmax(np.bincount(y))), "most frequent label itself")
    _fails("yardstick", lambda p, n: math.sqrt(p * (1 - p) / n), "that is one standard error")
    _fails("yardstick", lambda p, n: 1.96 * math.sqrt(p * (1 - p) / n), "95% normal interval")
    _fails("yardstick", lambda p, n: 2 * p * (1 - p) / n, "take the square root")

    def binary_only(preds, labels, k):
        from siftkit.core.metrics import matthews_corrcoef

        return matthews_corrcoef(np.asarray(preds) != 0, np.asarray(labels) != 0)

    _fails("mcc", binary_only, "use the K-class formula")

    def no_zero_convention(preds, labels, k):
        with np.errstate(all="ignore"):
            c = np.zeros((k, k))
            np.add.at(c, (labels, preds), 1)
            t, p, s, n = c.sum(1), c.sum(0), np.trace(c), c.sum()
            return (s * n - p @ t) / np.sqrt((n * n - p @ p) * (n * n - t @ t))

    _fails("mcc", no_zero_convention, "defined as 0")
    _fails(
        "mcc", lambda preds, labels, k: float(np.mean(np.asarray(preds) == np.asarray(labels))), "that is the accuracy"
    )


def test_kit_helpers_that_the_checks_compare_with():
    from siftkit.explore.analysis import binomial_yardstick
    from siftkit.explore.analysis import majority_share as kit_majority

    assert kit_majority([0, 1, 1, 2]) == 0.5
    assert binomial_yardstick(0.5, 100) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="n > 0"):
        binomial_yardstick(0.5, 0)


# ----------------------------------------------------------------------------- the notebooks' exercises


def _exercise_cells(nb):
    """The solution cells' sources: the code cells tagged 'exercise'."""
    return [c.source for c in nb.cells if c.cell_type == "code" and "exercise" in c.metadata.get("tags", [])]


def _student_version(name, tmp_path):
    pytest.importorskip("nbgrader")
    exe = shutil.which("jupyter", path=str(Path(sys.executable).parent)) or "jupyter"
    cmd = [exe, *STUDENT_COMMAND[1:], "--output-dir", str(tmp_path), str(REPO / "notebooks" / f"{name}.ipynb")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)


def _run_cells(sources):
    namespace = {}
    for source in sources:
        exec(compile(source, "<exercise cell>", "exec"), namespace)
    return namespace


@pytest.mark.subprocess
@pytest.mark.parametrize("name", list(EXERCISE_NOTEBOOKS))
def test_teachers_solutions_pass_and_students_version_fails_every_check(name, tmp_path):
    teacher = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    solutions = _exercise_cells(teacher)
    assert len(solutions) == len(EXERCISE_NOTEBOOKS[name])
    assert all("### BEGIN SOLUTION" in s and "### END SOLUTION" in s for s in solutions)
    # every exercise's check cell calls the kit's check on the function the exercise defines
    checks = "\n".join(c.source for c in teacher.cells if c.cell_type == "code")
    for fn in EXERCISE_NOTEBOOKS[name]:
        assert f"exercises.{ex.CHECKS[fn].__name__}({fn})" in checks
    teacher_ns = _run_cells(solutions)
    for fn in EXERCISE_NOTEBOOKS[name]:
        result = ex.CHECKS[fn](teacher_ns[fn])
        assert result.passed, str(result)

    student = _student_version(name, tmp_path)
    text = json.dumps(student)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    student_solutions = _exercise_cells(student)
    assert len(student_solutions) == len(solutions)
    assert all("raise NotImplementedError()" in s for s in student_solutions)
    # the written answers of the discussion questions are the teacher's only
    answers = [c.source for c in teacher.cells if c.cell_type == "markdown" and "BEGIN SOLUTION" in c.source]
    assert answers and all(
        "YOUR ANSWER HERE" in c.source
        for c in student.cells
        if c.cell_type == "markdown"
        and c.get("id") in {a.get("id") for a in teacher.cells if "BEGIN SOLUTION" in a.source}
    )
    student_ns = _run_cells(student_solutions)
    for fn in EXERCISE_NOTEBOOKS[name]:
        result = ex.CHECKS[fn](student_ns[fn])
        assert not result.passed and "not written yet" in result.message
