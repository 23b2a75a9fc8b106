"""One training step of plain / SMART / SiFT: its forward-pass cost, its NaN guard, and
that each algorithm actually learns (DESIGN.md section 2, "Cost floor" and the R rules)."""

import math

import pytest
import torch
from helpers import TEXTS, make_batch, real_examples, tiny_model

import siftkit.core.regularizers as regularizers
import siftkit.run.training as training
from siftkit.run.config import RunConfig
from siftkit.run.objective import AdversarialLoss
from siftkit.run.records import load_results
from siftkit.run.training import train

REPO_PARAMS = "params/smoke.yaml"


@pytest.fixture
def batch():
    return make_batch(TEXTS, labels=[0, 1, 1])


class ForwardCounter:
    """Counts calls of a module's top-level forward (a forward pre-hook)."""

    def __init__(self, module):
        self.calls = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, _module, _args):
        self.calls += 1

    def remove(self):
        self._handle.remove()


def _count_one_step(algo, batch, **cfg_kwargs):
    model = tiny_model("bert", train=True)
    objective = AdversarialLoss(model, RunConfig(algo=algo, **cfg_kwargs))
    # hooks registered after the objective exists, so the Bregman teacher's deepcopy
    # does not inherit the student's counter
    student = ForwardCounter(model)
    teacher = ForwardCounter(objective.bregman.teacher) if objective.bregman is not None else None
    loss, _ = objective(model, batch)
    loss.backward()  # the single backward adds no forward
    counts = (student.calls, teacher.calls if teacher is not None else 0)
    student.remove()
    if teacher is not None:
        teacher.remove()
    return counts


@pytest.mark.slow
def test_plain_costs_one_forward(batch):
    assert _count_one_step("plain", batch) == (1, 0)


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("algo", ["smart", "sift"])
def test_regularized_costs_two_plus_k_forwards(batch, algo, steps):
    # 1 clean forward (its logits reused as the target) + K ascent forwards + 1 adversarial
    assert _count_one_step(algo, batch, adv_steps=steps, bregman_weight=0.0) == (2 + steps, 0)


@pytest.mark.parametrize("steps", [1, 2])
def test_smart_bregman_adds_one_teacher_forward(batch, steps):
    assert _count_one_step("smart", batch, adv_steps=steps, bregman_weight=1.0) == (2 + steps, 1)


def test_sift_has_no_teacher(batch):
    model = tiny_model("bert")
    objective = AdversarialLoss(model, RunConfig(algo="sift", bregman_weight=1.0))
    assert objective.bregman is None
    assert _count_one_step("sift", batch, bregman_weight=1.0) == (3, 0)


# ------------------------------------------------------------------------ non-finite gradient


def _poison(kind):
    """An input_gradient that returns the real gradient with one entry (or all) non-finite."""
    real = regularizers.input_gradient

    def poisoned(loss, delta):
        g = real(loss, delta).clone()
        if kind == "all-nan":
            g.fill_(float("nan"))
        else:
            g[0, 0, 0] = float("nan") if kind == "one-nan" else float("inf")
        return g

    return poisoned


@pytest.mark.parametrize("kind", ["all-nan", "one-nan", "one-inf"])
@pytest.mark.parametrize("algo", ["smart", "sift"])
def test_non_finite_input_gradient_is_skipped_counted_and_kept_off_the_weights(monkeypatch, batch, algo, kind):
    monkeypatch.setattr(regularizers, "input_gradient", _poison(kind))
    model = tiny_model("bert", train=True)
    objective = AdversarialLoss(model, RunConfig(algo=algo))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(1, 4):
        loss, parts = objective(model, batch)
        assert torch.isfinite(loss), "a non-finite ascent gradient reached the loss"
        assert objective.regularizer.last_skipped
        assert objective.skipped == step
        assert parts["adv_loss"] == 0.0
        loss.backward()
        for n, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), f"{n}: non-finite gradient"
        optimizer.step()
        if objective.bregman is not None:
            objective.bregman.update(model)
        optimizer.zero_grad(set_to_none=True)
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all(), f"{n}: non-finite weights"
    # the task loss still trained the model
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


def test_finite_gradient_is_not_skipped(batch):
    model = tiny_model("bert", train=True)
    objective = AdversarialLoss(model, RunConfig(algo="sift"))
    loss, parts = objective(model, batch)
    assert not objective.regularizer.last_skipped and objective.skipped == 0
    assert parts["adv_loss"] > 0


def test_train_records_skipped_adversarial_steps(monkeypatch, tmp_path, data_dir):
    monkeypatch.setattr(regularizers, "input_gradient", _poison("all-nan"))
    built, real_load_model = [], training.load_model

    def keep_model(*args, **kwargs):  # hold on to the model train() builds
        model, tokenizer = real_load_model(*args, **kwargs)
        built.append(model)
        return model, tokenizer

    monkeypatch.setattr(training, "load_model", keep_model)
    out = tmp_path / "nan_run"
    cfg = RunConfig.from_yaml(
        REPO_PARAMS, algo="sift", output_dir=str(out), task="twitter_to_uci", data_dir=str(data_dir)
    )
    assert cfg.logging_steps == 1
    record = train(cfg, progress=False)

    batch_size = cfg.per_device_train_batch_size
    total_steps = sum(math.ceil(s["train_examples"] / batch_size) * s["num_train_epochs"] for s in record["stages"])
    assert total_steps > 1
    assert record["meta"]["skipped_adversarial_steps"] == total_steps
    assert record["meta"]["nonfinite_steps"] == 0  # the batch's task loss still made a step
    column = [row["skipped_adversarial_steps"] for row in record["history"]]
    assert column == list(range(1, total_steps + 1))  # logging_steps=1: one row per step
    assert all(row["adv_loss"] == 0.0 for row in record["history"])
    assert all(math.isfinite(row["loss"]) for row in record["history"])
    # every step skipped R: no perturbation was ever made, so its mean size is undefined
    sizes = ("mean_relative_perturbation", "mean_perturbation_norm", "mean_ascent_cosine")
    assert all(math.isnan(record["metrics"][k]) for k in sizes)
    assert all(math.isfinite(v) for k, v in record["metrics"].items() if k not in sizes)
    # the files say the same
    saved = load_results(out)
    assert saved["meta"]["skipped_adversarial_steps"] == total_steps
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert "skipped_adversarial_steps" in header
    # and the trained weights are finite
    assert len(built) == 1
    for name, p in built[0].named_parameters():
        assert torch.isfinite(p).all(), f"{name}: non-finite weights after training"


# --------------------------------------------------------------------------------- learning


@pytest.fixture(scope="module")
def cola_batch(data_dir):
    texts, labels = real_examples("cola", 200, data_dir, split="train")
    # the first 8 acceptable and the first 8 unacceptable sentences, interleaved
    pos = [i for i, y in enumerate(labels) if y == 1][:8]
    neg = [i for i, y in enumerate(labels) if y == 0][:8]
    assert len(pos) == len(neg) == 8
    order = [i for pair in zip(pos, neg) for i in pair]
    texts, labels = [texts[i] for i in order], [labels[i] for i in order]
    return make_batch(texts, labels=labels, truncation=True, max_length=32)


@pytest.mark.parametrize("algo", ["plain", "smart", "sift"])
def test_each_algo_learns_a_repeated_real_batch(cola_batch, algo):
    model = tiny_model("bert", seed=3, train=True)  # dropout on, as in real training
    objective = AdversarialLoss(model, RunConfig(algo=algo))  # the algorithm's published defaults
    # 3e-3: a tiny random BERT barely moves in 15 steps at 1e-3 with dropout on
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    task_losses, adv_losses = [], []
    for _ in range(15):
        loss, parts = objective(model, cola_batch)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        if objective.bregman is not None:
            objective.bregman.update(model)
        optimizer.zero_grad(set_to_none=True)
        task_losses.append(parts["task_loss"])
        adv_losses.append(parts["adv_loss"])
    first, last = sum(task_losses[:3]) / 3, sum(task_losses[-3:]) / 3
    # ln 2 ~ 0.69 at the start; require a clear drop, not float noise
    assert last < first - 0.05, f"{algo}: task loss {first:.4f} -> {last:.4f}"
    if algo == "plain":
        assert all(a == 0.0 for a in adv_losses)
    else:
        assert all(a > 0.0 for a in adv_losses) and objective.skipped == 0
