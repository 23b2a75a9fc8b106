"""`siftkit.AdversarialTrainer`: the native loop's loss inside a `transformers.Trainer`."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TEXTS, make_batch, tiny_model, tokenizer

from siftkit import RunConfig
from siftkit.run.objective import AdversarialLoss

KNOBS = {
    "sift": dict(adv_noise_std=0.05, adv_epsilon=0.2, adv_step_size=0.05, adv_weight=2.0),
    "smart": dict(adv_noise_std=0.05, adv_epsilon=0.2, adv_step_size=0.05, bregman_weight=1.0, bregman_beta=0.5),
}


def _args(tmp_path, **overrides):
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


def _trainer(tmp_path, model, algo, **kwargs):
    from siftkit import AdversarialTrainer

    return AdversarialTrainer(model=model, args=_args(tmp_path), algo=algo, **KNOBS[algo], **kwargs)


@pytest.mark.parametrize("algo", ["sift", "smart"])
def test_same_loss_and_gradient_as_the_native_loop(tmp_path, algo):
    """Same batch, same seed: the Trainer's loss and gradients are the native loop's."""
    batch = make_batch(labels=[0, 1, 1])
    # Native: AdversarialLoss is exactly what siftkit.run.training's loop calls per batch.
    native_model = tiny_model("bert", seed=3, train=True)
    objective = AdversarialLoss(native_model, RunConfig(algo=algo, **KNOBS[algo]))
    torch.manual_seed(11)  # dropout masks and the regularizer's noise
    native_loss, _ = objective(native_model, dict(batch))
    native_loss.backward()

    model = tiny_model("bert", seed=3, train=True)
    trainer = _trainer(tmp_path, model, algo)
    torch.manual_seed(11)
    loss = trainer.compute_loss(model, dict(batch))
    assert float(loss.detach()) == float(native_loss.detach())
    # training_step: the Trainer's own backward path (input preparation, GA scaling).
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop per step
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    step_loss = trainer.training_step(model, dict(batch))
    assert float(step_loss) == float(native_loss.detach())
    for (name, p), q in zip(model.named_parameters(), native_model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=0, atol=1e-7), name
    assert trainer.adversarial_loss.regularizer.last_stats["perturbation_norm"] > 0


@pytest.mark.parametrize("rule", ["mtdnn", "deberta", "seed_code"])
def test_the_trainer_takes_the_perturbation_rule_and_gives_the_native_loss(tmp_path, rule):
    from siftkit import AdversarialTrainer

    batch = make_batch(labels=[0, 1, 1])
    native_model = tiny_model("bert", seed=3, train=True)
    objective = AdversarialLoss(native_model, RunConfig(algo="sift", adv_rule=rule))
    torch.manual_seed(11)
    native_loss, _ = objective(native_model, dict(batch))
    model = tiny_model("bert", seed=3, train=True)
    trainer = AdversarialTrainer(model=model, args=_args(tmp_path), algo="sift", adv_rule=rule)
    assert trainer.adversarial_loss.regularizer.adv_rule == rule
    torch.manual_seed(11)
    assert float(trainer.compute_loss(model, dict(batch)).detach()) == float(native_loss.detach())
    with pytest.raises(ValueError, match=f"adv_epsilon=0.1 is not used by adv_rule='{rule}'"):
        AdversarialTrainer(model=model, args=_args(tmp_path), algo="sift", adv_rule=rule, adv_epsilon=0.1)


@pytest.mark.slow
def test_short_training_run_moves_the_teacher(tmp_path):
    from datasets import Dataset

    from siftkit import AdversarialTrainer

    tok = tokenizer()
    texts = list(TEXTS) * 4
    ds = Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"])
    model = tiny_model("bert", seed=0, train=True)
    trainer = AdversarialTrainer(
        model=model,
        args=_args(tmp_path, max_steps=3),
        train_dataset=ds,
        processing_class=tok,
        algo="smart",
        **KNOBS["smart"],
    )
    teacher = trainer.adversarial_loss.bregman.teacher
    before = [p.detach().clone() for p in teacher.parameters()]
    result = trainer.train()

    assert math.isfinite(result.training_loss)
    assert trainer.state.global_step == 3 and trainer.bregman_callback.updates == 3
    moved = max(float((p - b).abs().max()) for p, b in zip(teacher.parameters(), before))
    assert moved > 0
    # The teacher is an EMA of the model, not the model (beta = 0.5 after three steps).
    gap = max(float((p - q.detach()).abs().max()) for p, q in zip(teacher.parameters(), model.parameters()))
    assert gap > 0
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert logs and all(math.isfinite(row["adv_loss"]) and row["adv_loss"] > 0 for row in logs)
    assert all(row["bregman_loss"] >= 0 for row in logs)


def test_evaluation_uses_the_models_own_loss(tmp_path):
    model = tiny_model("bert", seed=0)  # eval mode
    trainer = _trainer(tmp_path, model, "sift")
    batch = make_batch(labels=[0, 1, 1])
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
        expected = model(**batch).loss
    assert float(loss) == float(expected) and outputs.logits.shape == (3, 2)


def test_return_outputs_in_training_gives_the_clean_logits(tmp_path):
    model = tiny_model("bert", seed=0)
    trainer = _trainer(tmp_path, model, "sift")
    batch = make_batch(labels=[0, 1, 1])
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)  # eval mode: no dropout
    with torch.no_grad():
        assert torch.equal(outputs.logits, model(**{k: v for k, v in batch.items() if k != "labels"}).logits)
    assert loss.requires_grad


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"adv_epsilonn": 1e-3}, "adv_epsilonn.*did you mean 'adv_epsilon'"),
        ({"learning_rate": 1e-3}, "learning_rate.*TrainingArguments"),
        ({"adv_epsilon": -1.0}, "adv_epsilon"),
        ({"algo": "freeat-typo"}, "algo"),
        ({"eps": 1e-5}, r"algo='sift' has no knobs of its own; algo_args holds 'eps' \(r3f\)"),  # R3F's knob
    ],
)
def test_bad_knobs_are_named(tmp_path, bad, message):
    from siftkit import AdversarialTrainer

    with pytest.raises(ValueError, match=message):
        AdversarialTrainer(model=tiny_model("bert"), args=_args(tmp_path), **{"algo": "sift", **bad})


def test_regression_models_are_refused(tmp_path):
    from siftkit import AdversarialTrainer

    with pytest.raises(ValueError, match="num_labels"):
        AdversarialTrainer(model=tiny_model("bert", num_labels=1), args=_args(tmp_path), algo="sift")
