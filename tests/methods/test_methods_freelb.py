"""FreeLB, PGD-K and FreeAT (zhuchen03/FreeLB's codes) against a re-derivation of their code.

The reference functions below (`_official_*`) are the official update written out again, the way
the code states it: the model is fed ``inputs_embeds = W[ids] + delta`` (as run_glue_freelb.py
does), the start is ``U(-1, 1) * mask * mag / sqrt(L_i * d)`` (l2) or ``U(-mag, mag) * mask``
(linf), a step adds ``adv_lr * g / max(||g_i||, 1e-8)`` with the norm over the whole sequence,
and the ball rescales (l2) or clamps (linf). The methods run through a BatchContext that
records what they do. Dropout is off (eval mode) where exact values are compared, except in
the tests that are about dropout.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import TEXTS, make_batch, robustness_log, tiny_model

from siftkit import methods
from siftkit.methods.base import Method
from siftkit.run.config import RunConfig
from siftkit.run.objective import build_method
from siftkit.run.training import train

LABELS = [0, 1, 1]


@pytest.fixture
def batch():
    return make_batch(TEXTS, labels=LABELS)


# ----------------------------------------------------------------------------- the reference


def _official_start(shape, mask, mag, norm_type):
    if mag <= 0:
        return torch.zeros(shape)
    input_mask = mask.float()
    if norm_type == "l2":
        delta = torch.zeros(shape).uniform_(-1, 1) * input_mask.unsqueeze(2)
        dims = input_mask.sum(1) * shape[-1]
        return delta * (mag / torch.sqrt(dims)).view(-1, 1, 1)
    return torch.zeros(shape).uniform_(-mag, mag) * input_mask.unsqueeze(2)


def _official_step(delta, g, lr, norm_type, max_norm):
    b = g.shape[0]
    if norm_type == "l2":
        denorm = torch.clamp(torch.norm(g.view(b, -1), dim=1).view(-1, 1, 1), min=1e-8)
        delta = delta + lr * g / denorm
        if max_norm > 0:
            norms = torch.norm(delta.view(b, -1), p=2, dim=1)
            exceed = (norms > max_norm).float()
            delta = delta * (max_norm / norms * exceed + (1 - exceed)).view(-1, 1, 1)
        return delta
    denorm = torch.clamp(torch.norm(g.view(b, -1), dim=1, p=float("inf")).view(-1, 1, 1), min=1e-8)
    delta = delta + lr * g / denorm
    return torch.clamp(delta, -max_norm, max_norm) if max_norm > 0 else delta


def _official_loss(model, batch, delta, scale=1.0):
    """CE * scale of the model fed inputs_embeds = W[ids] + delta (what the code does)."""
    embeds = model.get_input_embeddings()(batch["input_ids"])
    out = model(
        inputs_embeds=embeds + delta, attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
    )
    return F.cross_entropy(out.logits.float(), batch["labels"]) * scale


def _official_freelb(model, batch, *, K, lr, mag, norm_type="l2", max_norm=0.0, seed=0):
    """run_glue_freelb.py's loop: the deltas of the K forwards, the delta a K-th step would give,
    and the accumulated parameter gradients."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    shape = (*batch["input_ids"].shape, model.config.hidden_size)
    delta = _official_start(shape, batch["attention_mask"], mag, norm_type)
    used = []
    for astep in range(K + 1):  # one more step than the code, to know where it would have gone
        delta.requires_grad_()
        used.append(delta.detach().clone())
        if astep == K:
            break
        loss = _official_loss(model, batch, delta) / K
        loss.backward()
        delta = _official_step(delta, delta.grad.clone().detach(), lr, norm_type, max_norm).detach()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return used[:K], used[K], grads


class Recorder:
    """A BatchContext that back-propagates and counts; `optimizer` (optional) makes the updates."""

    def __init__(self, model=None, optimizer=None):
        self.model, self.optimizer = model, optimizer
        self.backwards = self.updates = 0

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()

    def backward(self, loss):
        if not torch.isfinite(loss.detach()):
            return False
        loss.backward()
        self.backwards += 1
        return True

    def update(self):
        self.updates += 1
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return True


def _method(model, algo, **knobs):
    return build_method(model, RunConfig.from_dict({"algo": algo, **knobs}))


def _spy_deltas(method):
    """Record the delta of every perturbed forward of `method`."""
    seen = []
    real = method.perturbed_logits

    def spy(split, batch, z, delta):
        seen.append(delta.detach().clone())
        return real(split, batch, z, delta)

    method.perturbed_logits = spy
    return seen


# ----------------------------------------------------------------------------- FreeLB


@pytest.mark.parametrize("norm_type, max_norm", [("l2", 0.0), ("l2", 0.08), ("linf", 0.0), ("linf", 0.08)])
def test_freelb_deltas_after_one_and_two_steps_are_the_codes(batch, norm_type, max_norm):
    knobs = dict(adv_K=3, adv_lr=0.1, adv_init_mag=0.05, adv_norm_type=norm_type, adv_max_norm=max_norm)
    ref_model = tiny_model("bert", seed=1)
    used_ref, _, _ = _official_freelb(ref_model, batch, K=3, lr=0.1, mag=0.05, norm_type=norm_type, max_norm=max_norm)
    model = tiny_model("bert", seed=1)
    method = _method(model, "freelb", **knobs)
    seen = _spy_deltas(method)
    torch.manual_seed(0)
    method.train_batch(model, batch, Recorder())
    assert len(seen) == 3
    for step in (0, 1, 2):  # the start, then after one and after two steps
        torch.testing.assert_close(seen[step], used_ref[step], rtol=1e-5, atol=1e-8)
    assert seen[0].abs().max() > 0 and not torch.equal(seen[1], seen[0])
    # padding never moves
    pad = batch["attention_mask"] == 0
    assert pad.any() and all(float(d[pad].abs().max()) == 0.0 for d in seen)
    if max_norm > 0:  # the ball binds: without it the steps go further
        free, _, _ = _official_freelb(
            tiny_model("bert", seed=1), batch, K=3, lr=0.1, mag=0.05, norm_type=norm_type, max_norm=0.0
        )
        assert not torch.allclose(free[2], used_ref[2])
        if norm_type == "linf":
            assert float(seen[2].abs().max()) == pytest.approx(max_norm)
        else:
            assert float(seen[2].flatten(1).norm(dim=1).max()) == pytest.approx(max_norm, rel=1e-5)


def test_freelb_normalizes_by_the_whole_sequence_not_per_token(batch):
    """One step from delta = 0 has whole-sequence norm adv_lr per example (normalized per token,
    every real token would move by adv_lr)."""
    model = tiny_model("bert", seed=1)
    method = _method(model, "freelb", adv_K=2, adv_lr=0.1, adv_init_mag=0.0)
    seen = _spy_deltas(method)
    method.train_batch(model, batch, Recorder())
    per_example = seen[1].flatten(1).norm(dim=1)
    torch.testing.assert_close(per_example, torch.full((3,), 0.1), rtol=1e-5, atol=0)
    per_token = seen[1].norm(dim=-1)[batch["attention_mask"] == 1]
    assert float(per_token.min()) < 0.05


def test_freelb_accumulates_every_step_divided_by_k(batch):
    ref_model = tiny_model("bert", seed=2)
    _, _, ref_grads = _official_freelb(ref_model, batch, K=3, lr=0.1, mag=0.05)
    model = tiny_model("bert", seed=2)
    method = _method(model, "freelb", adv_K=3, adv_lr=0.1, adv_init_mag=0.05)
    torch.manual_seed(0)
    ctx = Recorder()
    loss, parts = method.train_batch(model, batch, ctx)
    assert (ctx.backwards, ctx.updates) == (3, 1)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=1e-4, atol=1e-8, msg=name)
    # Not the gradient of one step, nor the sum without 1/K.
    single = _official_freelb(tiny_model("bert", seed=2), batch, K=1, lr=0.1, mag=0.05)[2]
    name = "classifier.weight"
    assert not torch.allclose(ref_grads[name], single[name], rtol=1e-3)
    assert not torch.allclose(model.get_parameter(name).grad, 3 * ref_grads[name], rtol=1e-3)
    assert parts["task_loss"] == pytest.approx(float(loss), rel=1e-6)  # no penalty: loss = mean CE


def test_freelb_last_step_does_not_move_delta(batch):
    model = tiny_model("bert", seed=1)
    method = _method(model, "freelb", adv_K=2, adv_lr=0.1, adv_init_mag=0.05)
    seen = _spy_deltas(method)
    torch.manual_seed(0)
    ctx = Recorder()
    _, parts = method.train_batch(model, batch, ctx)
    used, beyond, _ = _official_freelb(tiny_model("bert", seed=1), batch, K=2, lr=0.1, mag=0.05)
    assert len(seen) == 2 and ctx.backwards == 2 and ctx.updates == 1
    mask = batch["attention_mask"].bool()

    def mean_token_norm(d):
        return float(d.norm(dim=-1)[mask].mean())

    # The logged size is the last forward's delta (delta_1), not where a K-th step would go.
    assert parts["perturbation_norm"] == pytest.approx(mean_token_norm(used[1]), rel=1e-5)
    assert mean_token_norm(beyond) != pytest.approx(mean_token_norm(used[1]), rel=1e-3)
    assert 0 < parts["relative_perturbation"] and -1 <= parts["ascent_cosine"] <= 1


def test_freelb_k1_no_start_is_plain_bit_for_bit(batch):
    """adv_init_mag=0, K=1, no clean term: the same forward, loss and update as plain's batch."""
    weights = {}
    for algo, knobs in (("plain", {}), ("freelb", dict(adv_K=1, adv_init_mag=0.0))):
        model = tiny_model("bert", seed=4)
        method = _method(model, algo, **knobs)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        torch.manual_seed(5)
        for _ in range(2):
            method.train_batch(model, batch, Recorder(model, opt))
        weights[algo] = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights["plain"], weights["freelb"]))


@pytest.mark.parametrize("train_mode", [False, True], ids=["dropout-off", "dropout-on"])
def test_a_delta_kept_at_zero_gives_plains_weights(batch, train_mode):
    """The degenerate ball: adv_max_norm=0 means "no ball" in the code, so a zero-radius ball is
    a delta that never leaves 0 (adv_init_mag=0, adv_lr=0). PGD then trains on CE(f(e + 0)) =
    plain's loss, bit for bit. FreeLB with K=2 accumulates g/2 + g/2, which is g exactly (halving
    is exact in binary floating point). With dropout on, the shared masks (adv_sync_dropout)
    are the masks plain draws: still bit for bit."""
    cases = {
        "plain": {},
        "pgd": dict(adv_init_mag=0.0, adv_lr=0.0, adv_max_norm=0.0, adv_K=2),
        "freelb": dict(adv_K=2, adv_init_mag=0.0, adv_lr=0.0),
    }
    weights = {}
    for algo, knobs in cases.items():
        model = tiny_model("bert", seed=4, train=train_mode)
        method = _method(model, algo, **knobs)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        torch.manual_seed(5)
        for _ in range(2):
            method.train_batch(model, batch, Recorder(model, opt))
        weights[algo] = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights["plain"], weights["pgd"]))
    assert all(torch.equal(a, b) for a, b in zip(weights["plain"], weights["freelb"]))


def test_freelb_k3_with_delta_at_zero_has_plains_gradient_up_to_rounding(batch):
    """g/3 accumulated three times is g only up to rounding (1/3 is not a binary fraction), so
    the gradients agree to float precision, not bit for bit (and AdamW magnifies the rounding
    of gradients that are 0 in exact arithmetic, e.g. the attention key biases', into visible
    weight differences: gradients are compared, not weights)."""
    grads = {}
    for algo, knobs in (("plain", {}), ("freelb", dict(adv_K=3, adv_init_mag=0.0, adv_lr=0.0))):
        model = tiny_model("bert", seed=4)
        _method(model, algo, **knobs).train_batch(model, batch, Recorder())
        grads[algo] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads["plain"], grads["freelb"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-9)


def test_freelb_keeps_the_dropout_masks_across_its_steps(batch):
    """With dropout on and delta kept at 0, the K forwards give one loss (the same masks), and
    adv_sync_dropout=False gives K different ones."""
    losses = {}
    for sync in (True, False):
        model = tiny_model("bert", seed=4, train=True)
        method = _method(model, "freelb", adv_K=3, adv_init_mag=0.0, adv_lr=0.0, adv_sync_dropout=sync)
        seen = []
        real = method.task_loss

        def spy(logits, labels, real=real, seen=seen):
            out = real(logits, labels)
            seen.append(float(out.detach()))
            return out

        method.task_loss = spy
        torch.manual_seed(5)
        method.train_batch(model, batch, Recorder())
        losses[sync] = seen
    assert len(set(losses[True])) == 1
    assert len(set(losses[False])) == 3


def test_freelb_clean_term_adds_a_clean_backward(batch):
    model = tiny_model("bert", seed=1)
    method = _method(model, "freelb", adv_K=2, adv_clean_weight=1.0)
    ctx = Recorder()
    loss, parts = method.train_batch(model, batch, ctx)
    assert (ctx.backwards, ctx.updates) == (3, 1)
    with torch.no_grad():
        clean = F.cross_entropy(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"])
    assert parts["clean_loss"] == pytest.approx(float(clean), rel=1e-6)
    assert float(loss) == pytest.approx(parts["clean_loss"] + parts["task_loss"], rel=1e-6)


# ----------------------------------------------------------------------------- PGD


def _official_pgd(model, batch, *, K, lr, mag, max_norm, seed=0):
    """std_adv_train_step: K ascents with input gradients only, then the last loss's gradients."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    shape = (*batch["input_ids"].shape, model.config.hidden_size)
    delta = _official_start(shape, batch["attention_mask"], mag, "l2").requires_grad_()
    loss = _official_loss(model, batch, delta)
    for _ in range(K):
        g = torch.autograd.grad(loss, delta)[0]
        delta = _official_step(delta.detach(), g, lr, "l2", max_norm).requires_grad_()
        loss = _official_loss(model, batch, delta)
    loss.backward()
    return delta.detach(), loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_pgd_trains_on_the_final_adversarial_loss_only(batch):
    knobs = dict(adv_K=2, adv_lr=0.1, adv_init_mag=0.05, adv_max_norm=0.12)
    ref_delta, ref_loss, ref_grads = _official_pgd(
        tiny_model("bert", seed=3), batch, K=2, lr=0.1, mag=0.05, max_norm=0.12
    )
    model = tiny_model("bert", seed=3)
    method = _method(model, "pgd", **knobs)
    seen = _spy_deltas(method)
    torch.manual_seed(0)
    loss, parts = method.loss(model, batch)
    # the ascent left no parameter gradient behind
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    assert len(seen) == 3  # K ascent forwards + the final one
    torch.testing.assert_close(seen[-1], ref_delta, rtol=1e-5, atol=1e-8)
    assert float(loss.detach()) == pytest.approx(float(ref_loss), rel=1e-6)
    assert parts["task_loss"] == float(loss.detach())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=1e-4, atol=1e-8, msg=name)
    # ... which is not the gradient at the start (no ascent)
    start_only = _official_pgd(tiny_model("bert", seed=3), batch, K=0, lr=0.1, mag=0.05, max_norm=0.12)[2]
    assert not torch.allclose(start_only["classifier.weight"], ref_grads["classifier.weight"], rtol=1e-3)
    assert parts["relative_perturbation"] > 0 and math.isfinite(parts["ascent_cosine"])


# ----------------------------------------------------------------------------- FreeAT


def test_freeat_replays_k_times_carrying_delta(batch):
    """K replays, each a backward and an update; delta carried from replay to replay; each
    replay looks W[ids] up in the table the previous update changed; loss / (1 + K)."""
    K, lr, mag, max_norm, sgd = 3, 0.1, 0.05, 0.12, 0.5
    ref = tiny_model("bert", seed=6)
    opt = torch.optim.SGD(ref.parameters(), lr=sgd)
    torch.manual_seed(0)
    shape = (*batch["input_ids"].shape, ref.config.hidden_size)
    delta = _official_start(shape, batch["attention_mask"], mag, "l2")
    ref_used = []
    for _ in range(K):
        delta.requires_grad_()
        ref_used.append(delta.detach().clone())
        _official_loss(ref, batch, delta, scale=1 / (1 + K)).backward()
        delta = _official_step(delta.detach(), delta.grad.detach(), lr, "l2", max_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    model = tiny_model("bert", seed=6)
    method = _method(model, "freeat", adv_K=K, adv_lr=lr, adv_init_mag=mag, adv_max_norm=max_norm)
    assert method.updates_per_batch == K
    seen = _spy_deltas(method)
    ctx = Recorder(model, torch.optim.SGD(model.parameters(), lr=sgd))
    torch.manual_seed(0)
    method.train_batch(model, batch, ctx)
    assert (ctx.backwards, ctx.updates, len(seen)) == (K, K, K)
    for mine, theirs in zip(seen, ref_used):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-8)
    assert not torch.equal(seen[1], seen[0]) and not torch.equal(seen[2], seen[1])  # carried and moved
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_freeat_outside_its_stages_is_one_plain_update(batch):
    model = tiny_model("bert", seed=6)
    method = _method(model, "freeat", adv_K=3)
    method.active = False
    assert method.updates_per_batch == 1
    ctx = Recorder()
    _, parts = method.train_batch(model, batch, ctx)
    assert (ctx.backwards, ctx.updates) == (1, 1)
    assert parts["relative_perturbation"] == 0.0


def test_freeat_loss_scale_knob(batch):
    grads = {}
    for scaled in (True, False):
        model = tiny_model("bert", seed=6)
        method = _method(model, "freeat", adv_K=1, adv_init_mag=0.0, adv_scale_loss=scaled)
        method.train_batch(model, batch, Recorder())
        grads[scaled] = model.classifier.weight.grad.clone()
    torch.testing.assert_close(grads[True] * 2, grads[False], rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- bad values

BAD = [
    ({"algo": "freelb", "adv_init_mag": -0.1}, "adv_init_mag must be a finite number >= 0 for algo='freelb', got -0.1"),
    ({"algo": "freelb", "adv_lr": -0.1}, "adv_lr must be a finite number >= 0 for algo='freelb', got -0.1"),
    ({"algo": "freelb", "adv_max_norm": -1.0}, "adv_max_norm must be a finite number >= 0 for algo='freelb', got -1.0"),
    (
        {"algo": "freelb", "adv_clean_weight": -1.0},
        "adv_clean_weight must be a finite number >= 0 for algo='freelb', got -1.0",
    ),
    (
        {"algo": "pgd", "adv_init_mag": float("nan")},
        "adv_init_mag must be a finite number >= 0 for algo='pgd', got nan",
    ),
    ({"algo": "freelb", "adv_K": 0}, "adv_K must be an int >= 1 for algo='freelb' (the number of ascent steps), got 0"),
    ({"algo": "pgd", "adv_K": 0}, "adv_K must be an int >= 1 for algo='pgd' (the number of ascent steps), got 0"),
    (
        {"algo": "freeat", "adv_K": 0},
        "adv_K must be an int >= 1 for algo='freeat' (the number of replays of each batch, each an optimizer update), "
        "got 0",
    ),
    (
        {"algo": "pgd", "adv_norm_type": "linf"},
        "adv_norm_type='linf' is not available for algo='pgd': its official code (fairseq --std-adv, std_adv_train_step) "
        "draws an l2 start and takes l2 steps in an l2 ball only; leave adv_norm_type='l2', or use algo='freelb', whose "
        "code has the linf rule",
    ),
    (
        {"algo": "freeat", "adv_norm_type": "linf"},
        "adv_norm_type='linf' is not available for algo='freeat': its official code (fairseq --per-step-adv, "
        "freeat_adv_train_step) draws an l2 start and takes l2 steps in an l2 ball only; leave adv_norm_type='l2', or "
        "use algo='freelb', whose code has the linf rule",
    ),
    (
        {"algo": "freelb", "adv_norm_type": "l1"},
        "adv_norm_type must be one of 'l2', 'linf' for algo='freelb'; got 'l1'",
    ),
    (
        {"algo": "freelb", "perturb_at": "embedding_output"},
        "perturb_at='embedding_output' is not a point algo='freelb' perturbs; it takes 'word_embeddings'",
    ),
]


@pytest.mark.parametrize(
    "bad, message",
    BAD,
    ids=[f"{b['algo']}-{next(k for k in b if k != 'algo')}={b[next(k for k in b if k != 'algo')]}" for b, _ in BAD],
)
def test_bad_values_name_the_knob(bad, message):
    with pytest.raises(ValueError) as err:
        RunConfig.from_dict(bad)
    assert str(err.value) == message
    shown = ", ".join(f"{k}={v!r}" for k, v in bad.items())
    robustness_log(f"`{shown}`", message)


def test_a_model_without_word_embeddings_is_named():
    from siftkit.core.split import UnsupportedModelError

    class NoEmbeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

    lookups_gone = tiny_model("bert")
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        setattr(lookups_gone.bert.embeddings, name, torch.nn.Identity())
    for model, what, reason in (
        (NoEmbeddings(), "a model without an embedding block", "NoEmbeddings: no embedding block found"),
        (
            lookups_gone,
            "a model whose embedding block has no nn.Embedding",
            "BertForSequenceClassification: the embedding block has no nn.Embedding word lookup",
        ),
    ):
        messages = {}
        for algo in ("freelb", "pgd", "freeat"):
            with pytest.raises(UnsupportedModelError) as err:
                _method(model, algo)
            messages[algo] = str(err.value)
            assert messages[algo].startswith(
                f"algo={algo!r} perturbs the word embeddings (perturb_at="
                f"'word_embeddings'), which this model does not have: {reason}"
            )
        robustness_log(f"algo='freelb' (or 'pgd', 'freeat') on {what}", messages["freelb"])


def test_the_methods_are_registered_with_their_knobs():
    assert {"freelb", "pgd", "freeat"} <= set(methods.names())
    owners = methods.knob_owners()
    assert set(owners["adv_K"]) == {"freelb", "pgd", "freeat"} and owners["adv_clean_weight"] == ["freelb"]
    for algo in ("freelb", "pgd", "freeat"):
        assert type(build_method(tiny_model("bert"), RunConfig(algo=algo))).train_batch is not None
    own = {
        a: type(build_method(tiny_model("bert"), RunConfig(algo=a))).train_batch is not Method.train_batch
        for a in ("freelb", "pgd", "freeat")
    }
    assert own == {"freelb": True, "pgd": False, "freeat": True}


# ----------------------------------------------------------------------------- through the loop


def _smoke(tmp_path, smoke_params, name, **overrides):
    cfg = RunConfig.from_yaml(smoke_params, output_dir=str(tmp_path / name), **overrides)
    return train(cfg, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo, overrides",
    [
        ("freelb", {}),
        ("pgd", {}),
        ("freeat", {}),
        ("freelb", {"adv_stages": "last", "adv_K": 3}),
    ],
    ids=["freelb", "pgd", "freeat", "freelb-last"],
)
def test_smoke_run_through_the_loop(tmp_path, smoke_params, algo, overrides):
    record = _smoke(tmp_path, smoke_params, algo, algo=algo, **overrides)
    assert record["config"]["algo_args"]["adv_K"] == overrides.get("adv_K", 2)
    assert math.isfinite(record["metrics"]["uci_test_accuracy"])
    history = record["history"]
    acting = [r for r in history if overrides.get("adv_stages") != "last" or r["stage"] == "uci"]
    assert acting and all(r["relative_perturbation"] > 0 for r in acting)
    if overrides.get("adv_stages") == "last":
        assert all(r["relative_perturbation"] == 0.0 for r in history if r["stage"] == "twitter")
    # plain's steps per stage are 5 (20 examples, batch 4); FreeAT makes 2 updates per batch
    steps = {s: max(r["step"] for r in history if r["stage"] == s) for s in ("twitter", "uci")}
    assert steps == ({"twitter": 3, "uci": 3} if algo == "freeat" else {"twitter": 5, "uci": 5})
    assert record["metrics"]["mean_relative_perturbation"] > 0


@pytest.mark.slow
def test_freeat_in_stage2_only_shares_plains_stage1(tmp_path, smoke_params):
    cache = str(tmp_path / "cache")
    plain = _smoke(tmp_path, smoke_params, "plain", stage_cache_dir=cache)
    last = _smoke(tmp_path, smoke_params, "freeat_last", algo="freeat", adv_stages="last", stage_cache_dir=cache)
    assert last["meta"]["stages_from_cache"] == ["twitter"]
    assert last["stages"][0]["cache_key"] == plain["stages"][0]["cache_key"]
    alone = _smoke(tmp_path, smoke_params, "freeat_alone", algo="freeat", adv_stages="last")
    assert last["metrics"] == alone["metrics"]
    # stage 2: 5 plain updates over ceil(5 / 2) = 3 batches of 2 replays
    assert max(r["step"] for r in alone["history"] if r["stage"] == "uci") == 3


@pytest.mark.slow
def test_freeat_resumes_exactly(tmp_path, smoke_params):
    import siftkit.run.training as training
    from siftkit.run.checkpoint import latest_checkpoint

    class Crash(Exception):
        pass

    reference = _smoke(tmp_path, smoke_params, "ref", algo="freeat", save_steps=1)
    real = training.save_checkpoint

    def save_then_crash(accelerator, out, global_step, state, **kw):
        path = real(accelerator, out, global_step, state, **kw)
        if global_step == 2:  # mid-way through stage 1's 3 batches
            raise Crash
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "save_checkpoint", save_then_crash)
        with pytest.raises(Crash):
            _smoke(tmp_path, smoke_params, "run", algo="freeat", save_steps=1)
    assert latest_checkpoint(tmp_path / "run").name == "step-0000002"
    resumed = _smoke(tmp_path, smoke_params, "run", algo="freeat", save_steps=1, resume=True)
    assert resumed["history"] == reference["history"] and resumed["metrics"] == reference["metrics"]


@pytest.mark.slow
def test_freelb_k1_through_the_loop_is_plain(tmp_path, smoke_params):
    """With dropout on: K=1 draws no start and repeats no mask, so the run is plain's."""
    plain = _smoke(tmp_path, smoke_params, "plain")
    freelb = _smoke(tmp_path, smoke_params, "freelb", algo="freelb", adv_K=1, adv_init_mag=0.0)
    assert freelb["metrics"]["uci_test_accuracy"] == plain["metrics"]["uci_test_accuracy"]
    assert [r["task_loss"] for r in freelb["history"]] == [r["task_loss"] for r in plain["history"]]


# ----------------------------------------------------------------------------- AdversarialTrainer


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


def _dataset():
    from datasets import Dataset
    from helpers import tokenizer

    tok = tokenizer()
    texts = list(TEXTS) * 4
    ds = Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    return ds.map(lambda b: tok(b["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"]), tok


def test_trainer_freelb_step_is_the_native_one(tmp_path, batch):
    from siftkit import AdversarialTrainer

    knobs = dict(adv_K=3, adv_lr=0.1, adv_init_mag=0.05)
    native = tiny_model("bert", seed=3, train=True)
    method = _method(native, "freelb", **knobs)
    torch.manual_seed(11)
    native_loss, _ = method.train_batch(native, dict(batch), Recorder())

    model = tiny_model("bert", seed=3, train=True)
    trainer = AdversarialTrainer(model=model, args=_trainer_args(tmp_path), algo="freelb", **knobs)
    assert trainer.owns_backwards
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(11)
    step_loss = trainer.training_step(model, dict(batch))
    assert float(step_loss) == pytest.approx(float(native_loss), rel=1e-6)
    for (name, p), q in zip(model.named_parameters(), native.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-8, msg=name)
    with pytest.raises(ValueError, match="algo='freelb' runs its own backwards"):
        trainer.compute_loss(model, dict(batch))


@pytest.mark.slow
@pytest.mark.parametrize("algo, updates", [("freelb", 3), ("freeat", 6), ("pgd", 3)])
def test_trainer_trains_with_the_methods(tmp_path, algo, updates):
    """3 Trainer steps: FreeLB and PGD one update each; FreeAT two (its first replay's update is
    made in the batch, the second by the Trainer), and its schedule is sized in updates."""
    from siftkit import AdversarialTrainer

    ds, tok = _dataset()
    model = tiny_model("bert", seed=0, train=True)
    trainer = AdversarialTrainer(
        model=model, args=_trainer_args(tmp_path, max_steps=3), train_dataset=ds, processing_class=tok, algo=algo
    )
    steps = []
    trainer.create_optimizer()
    trainer.optimizer.register_step_post_hook(lambda *_: steps.append(1))
    result = trainer.train()
    assert math.isfinite(result.training_loss) and trainer.state.global_step == 3
    assert len(steps) == updates
    assert trainer.lr_scheduler.last_epoch == updates
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert logs and all(row["relative_perturbation"] > 0 for row in logs)
    if algo == "freeat":
        assert trainer.lr_scheduler.get_last_lr()[0] == 0.0  # the schedule ends with the last update


def test_trainer_refuses_gradient_accumulation_for_freeat(tmp_path):
    from siftkit import AdversarialTrainer

    with pytest.raises(ValueError) as err:
        AdversarialTrainer(
            model=tiny_model("bert"), args=_trainer_args(tmp_path, gradient_accumulation_steps=2), algo="freeat"
        )
    message = str(err.value)
    assert message == (
        "algo='freeat' makes 2 optimizer updates on every batch (one per replay), so it cannot "
        "accumulate gradients over batches; got gradient_accumulation_steps=2 in TrainingArguments: "
        "use gradient_accumulation_steps=1 (and a larger per_device_train_batch_size)"
    )
    robustness_log("AdversarialTrainer(algo='freeat') with gradient_accumulation_steps=2", message)
    # FreeLB accumulates its K backwards like micro-batches: allowed
    AdversarialTrainer(
        model=tiny_model("bert"), args=_trainer_args(tmp_path, gradient_accumulation_steps=2), algo="freelb"
    )


@pytest.mark.slow
def test_method_cost_runs_every_variant_on_p2_tweets():
    """The step-time helper (no timing asserted): every variant trains, sizes are reported."""
    from siftkit.run.method_cost import method_step_times, p2_tweets

    texts, labels = p2_tweets(3)
    assert len(texts) == 3 and set(labels) <= {0, 1}
    out = method_step_times(
        {"plain": {"algo": "plain"}, "freeat": {"algo": "freeat"}},
        texts,
        labels,
        model_name="random:bert",
        warmup=0,
        steps=1,
    )
    assert out["plain"]["ratio_to_plain"] == 1.0 and out["freeat"]["updates_per_batch"] == 2
    assert out["plain"]["mean_relative_perturbation"] == 0.0 and out["freeat"]["mean_relative_perturbation"] > 0
