"""ALUM and R-Drop (siftkit.methods.alum, siftkit.methods.rdrop), each against a re-derivation of
its official code written here with the codes' own operations (F.kl_div with softmax targets):

- ALUM: namisan/mt-dnn alum/adv_masked_lm.py after commit f0b40b6: noise_var * N(0, I); the
  gradient of KL(p_clean || p_adv), batchmean, w.r.t. the noise; u = noise + step * g;
  delta = u / (max|u| + noise_gamma) per token; R = KL(adv, clean.detach()) + KL(clean,
  adv.detach()) on the detached input + delta; loss = CE + adv_alpha * R.
- R-Drop: dropreg/R-Drop: CE_1 + CE_2 + alpha * (KL(p_1 || p_2) + KL(p_2 || p_1)) / 2 with
  reduction='none' then sum (the BERT code) or divided by the batch size (the fairseq code).

Plus invariants, bad values, and short runs through the native loop and AdversarialTrainer.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TEXTS, make_batch, robustness_log, tiny_model, tokenizer

from siftkit.core.split import EmbeddingSplit, UnsupportedModelError, model_inputs
from siftkit.methods.base import MeasureContext
from siftkit.run.config import RunConfig
from siftkit.run.objective import build_method
from siftkit.run.training import train

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "params" / "smoke.yaml"
SEED = 7
LABELS = [0, 1, 1]
NOISE, STEP, EPSILON = 1e-3, 2e5, 1.5e-3  # ALUM sizes at which the ascent step matters on the tiny model


@pytest.fixture(scope="module")
def batch():
    b = make_batch(TEXTS, labels=LABELS)
    assert (~b["attention_mask"].bool()).any(), "the test batch must contain padding"
    return b


def _method(model, **config):
    return build_method(model, RunConfig.from_dict({"model_name": "random:bert", **config}))


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def _grads(loss, model):
    gs = torch.autograd.grad(loss, _params(model), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, _params(model))]


def _kl_code(input_logits, target_logits, reduction):
    """The codes' KL: F.kl_div(log_softmax(input), softmax(target)) = KL(target || input)."""
    return F.kl_div(F.log_softmax(input_logits, -1), F.softmax(target_logits, -1), reduction=reduction)


# ------------------------------------------------------------------------------------------ ALUM


def _alum_reference(model, batch, *, noise_var, step, gamma=1e-6, alpha=1.0, projection="code", epsilon=None):
    """ALUM's loss, delta and ascent gradient as adv_masked_lm.py computes them (eval mode: no dropout,
    so the noise is the only draw; torch.manual_seed(SEED) before, as before the method's call)."""
    split = EmbeddingSplit(model)
    torch.manual_seed(SEED)
    logits, embed = split.forward_capture(batch, "embedding_output")
    real = batch["attention_mask"].unsqueeze(-1).to(embed.dtype)
    noise = (torch.randn(embed.shape, dtype=embed.dtype) * noise_var * real).requires_grad_()
    adv_logits = split.forward_from(embed.detach() + noise, batch, "embedding_output")
    adv_loss = _kl_code(adv_logits, logits.detach(), "batchmean")
    (g,) = torch.autograd.grad(adv_loss, noise)
    moved = noise.detach() + g * step
    if projection == "code":
        delta = moved / (moved.abs().max(-1, keepdim=True)[0] + gamma)
    else:
        delta = moved.clamp(-epsilon, epsilon)
    delta = delta * real
    adv_logits = split.forward_from((embed.detach() + delta).detach(), batch, "embedding_output")
    n = len(batch["labels"])
    r = _kl_code(adv_logits, logits.detach(), "sum") / n + _kl_code(logits, adv_logits.detach(), "sum") / n
    loss = F.cross_entropy(logits.float(), batch["labels"]) + alpha * r  # the kit's task loss is float32
    return loss, r, delta, g, embed


@pytest.mark.parametrize("projection", ["code", "paper"])
def test_alum_step_and_loss_match_the_official_formula(batch, projection):
    model = tiny_model("bert", dtype=torch.float64)  # float64: agreement to 1e-9 means the math agrees
    # A step large enough that the gradient term counts about as much as the noise in delta (at
    # the published sizes it is ~4e-9 of it on this model, and a wrong gradient would go unseen).
    knobs = dict(noise_var=NOISE, alum_step_size=STEP, adv_alpha=2.0, alum_projection=projection)
    if projection == "paper":
        knobs["alum_epsilon"] = EPSILON
    method = _method(model, algo="alum", **knobs)
    torch.manual_seed(SEED)
    loss, parts = method.loss(model, dict(batch))
    ref_loss, ref_r, ref_delta, ref_g, embed = _alum_reference(
        model, batch, noise_var=NOISE, step=STEP, alpha=2.0, projection=projection, epsilon=EPSILON
    )

    # Tolerances: the KLs near the clean point are differences of nearly equal numbers, which the
    # kit and F.kl_div round differently (relative 1e-11 here; 1e-6 for a KL of 1e-9).
    assert torch.allclose(method.last_gradient, ref_g, rtol=1e-8, atol=1e-9 * float(ref_g.abs().max()))
    assert torch.allclose(method.last_perturbation, ref_delta, rtol=1e-8, atol=1e-9 * float(ref_delta.abs().max()))
    assert float(loss.detach()) == pytest.approx(float(ref_loss.detach()), rel=1e-10, abs=0)
    assert parts["adv_loss"] == pytest.approx(float(ref_r.detach()), rel=1e-6)
    assert parts["reg_loss"] == pytest.approx(2.0 * parts["adv_loss"], rel=1e-12)
    # R's gradient reaches what the code's reaches: the layers above the point through the
    # adversarial branch (its input detached), the whole model through the clean branch.
    for mine, ref in zip(_grads(loss, model), _grads(ref_loss, model)):
        assert torch.allclose(mine, ref, rtol=1e-7, atol=1e-12)
    # The gradient term moved delta away from the noise's own direction.
    noise_only = method.step(method.last_noise, torch.zeros_like(ref_g)) * batch["attention_mask"].unsqueeze(-1)
    assert not torch.allclose(method.last_perturbation, noise_only, rtol=1e-3, atol=0)
    real = batch["attention_mask"].bool()
    size = method.last_perturbation.abs().amax(-1)
    if projection == "code":  # max-norm ||u|| / (||u|| + gamma) per real token: about 1, whatever the sizes
        peak = (method.last_noise + STEP * method.last_gradient).abs().amax(-1)
        assert torch.allclose(size[real], peak[real] / (peak[real] + 1e-6), rtol=1e-12, atol=0)
    else:
        assert (size[real] <= EPSILON).all() and (size[real] == EPSILON).any()
    assert (method.last_perturbation[~real] == 0).all()  # padding is never pushed
    # The logged size is the re-derived one: per real token ||delta_t|| / ||z_t||, and the cosine.
    rel = (ref_delta.norm(dim=-1) / embed.detach().norm(dim=-1))[real].mean()
    assert parts["relative_perturbation"] == pytest.approx(float(rel), rel=1e-5)
    cos = F.cosine_similarity(ref_delta, ref_g, dim=-1)[real].mean()
    assert parts["ascent_cosine"] == pytest.approx(float(cos), rel=1e-5, abs=1e-7)


def test_alum_defaults_are_the_codes_and_its_push_is_the_noise_direction(batch):
    cfg = RunConfig(algo="alum")
    assert cfg.algo_args == {
        "adv_alpha": 1.0,
        "noise_var": 1e-5,
        "alum_step_size": 1e-3,
        "noise_gamma": 1e-6,
        "project_norm_type": "inf",
        "alum_projection": "code",
        "alum_epsilon": 1e-5,
    }
    assert cfg.perturb_at == "embedding_output"
    model = tiny_model("bert", dtype=torch.float64)
    method = _method(model, algo="alum")
    torch.manual_seed(SEED)
    _, parts = method.loss(model, dict(batch))
    _, _, ref_delta, _, _ = _alum_reference(model, batch, noise_var=1e-5, step=1e-3)
    assert torch.allclose(method.last_perturbation, ref_delta, rtol=1e-9, atol=1e-15)
    # At the published sizes the step is ~4e-9 of the noise: delta is the noise rescaled to unit size.
    unit_noise = method.last_noise / (method.last_noise.abs().amax(-1, keepdim=True) + 1e-6)
    assert torch.allclose(method.last_perturbation, unit_noise, rtol=1e-5, atol=1e-12)
    assert abs(parts["ascent_cosine"]) < 0.2 and parts["relative_perturbation"] > 0.1


def test_alum_l1_is_the_codes_sign_step_and_l2_its_guarded_norm(batch):
    model = tiny_model("bert", dtype=torch.float64)
    real = batch["attention_mask"].unsqueeze(-1).bool()
    for norm in ("l1", "l2"):
        method = _method(model, algo="alum", project_norm_type=norm, noise_var=1e-3)
        torch.manual_seed(SEED)
        method.loss(model, dict(batch))
        u = method.last_noise + 1e-3 * method.last_gradient
        expected = u.sign() if norm == "l1" else u / (u.norm(dim=-1, keepdim=True) + 1e-6)
        assert torch.equal(method.last_perturbation, expected * real)


@pytest.mark.parametrize("at", ["word_embeddings", "pre_layernorm"])
def test_alum_perturbs_the_chosen_point(batch, at):
    model = tiny_model("bert", dtype=torch.float64)
    method = _method(model, algo="alum", perturb_at=at)
    z = EmbeddingSplit(model).embed(batch, at).detach()
    torch.manual_seed(SEED)
    loss, parts = method.loss(model, dict(batch))
    assert method.last_perturbation.shape == z.shape and math.isfinite(float(loss.detach())) and parts["adv_loss"] > 0
    rel = (method.last_perturbation.norm(dim=-1) / z.norm(dim=-1))[batch["attention_mask"].bool()].mean()
    assert parts["relative_perturbation"] == pytest.approx(float(rel), rel=1e-5)


def test_alum_skips_a_non_finite_gradient_and_counts_it(monkeypatch, batch):
    import siftkit.methods.alum.method as alum

    model = tiny_model("bert", dtype=torch.float64)
    method = _method(model, algo="alum")
    monkeypatch.setattr(alum, "input_gradient", lambda loss, delta: torch.full_like(delta, float("nan")))
    loss, parts = method.loss(model, dict(batch))
    task = F.cross_entropy(model(**model_inputs(batch)).logits.float(), batch["labels"])
    assert float(loss.detach()) == float(task.detach()) and method.skipped == 1
    assert parts["adv_loss"] == 0.0 and math.isnan(parts["relative_perturbation"])


def test_alum_inactive_is_plain_exactly(batch):
    model = tiny_model("bert", train=True)
    plain = _method(model, algo="plain")
    method = _method(model, algo="alum")
    method.active = False
    torch.manual_seed(SEED)
    loss, parts = method.objective(model, dict(batch))
    torch.manual_seed(SEED)
    plain_loss, _ = plain.objective(model, dict(batch))
    assert float(loss.detach()) == float(plain_loss.detach())
    assert set(parts) == {
        "task_loss",
        "adv_loss",
        "reg_loss",
        "perturbation_norm",
        "relative_perturbation",
        "ascent_cosine",
    }


# ---------------------------------------------------------------------------------------- R-Drop


def _dropout_off(model):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_rdrop_loss_matches_the_official_formula(batch, reduction):
    model = tiny_model("bert", dtype=torch.float64, train=True)
    method = _method(model, algo="rdrop", reg_alpha=0.7, rdrop_reduction=reduction)
    torch.manual_seed(SEED)
    loss, parts = method.loss(model, dict(batch))
    # The same draws: the batch repeated, one forward (so the same dropout masks as the method's).
    torch.manual_seed(SEED)
    inputs = model_inputs(batch)
    logits = model(**{k: torch.cat([v, v]) for k, v in inputs.items()}).logits
    n = len(LABELS)
    first, second = logits[:n], logits[n:]
    ce = F.cross_entropy(first.float(), batch["labels"]) + F.cross_entropy(second.float(), batch["labels"])
    kl_sum = (_kl_code(first, second, "none").sum() + _kl_code(second, first, "none").sum()) / 2
    ref = ce + 0.7 * (kl_sum / n if reduction == "mean" else kl_sum)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    assert parts["task_loss"] == pytest.approx(float(ce.detach()) / 2, rel=1e-12)
    assert parts["reg_loss"] == pytest.approx(0.7 * parts["adv_loss"], rel=1e-12) and parts["adv_loss"] > 0
    # Gradient into both forwards of both KLs (the codes detach nothing).
    for mine, theirs in zip(_grads(loss, model), _grads(ref, model)):
        assert torch.allclose(mine, theirs, rtol=1e-9, atol=1e-14)


def test_rdrop_the_two_halves_get_independent_dropout_masks(batch):
    model = tiny_model("bert", train=True)
    method = _method(model, algo="rdrop")
    seen = []
    handle = model.bert.embeddings.register_forward_hook(lambda _m, _a, out: seen.append(out.detach()))
    try:
        torch.manual_seed(SEED)
        _, parts = method.loss(model, dict(batch))
    finally:
        handle.remove()
    (out,) = seen  # one forward of the doubled batch
    n = len(LABELS)
    dropped_first, dropped_second = out[:n] == 0, out[n:] == 0  # LayerNorm's output is 0 only where dropped
    real = batch["attention_mask"].bool().unsqueeze(-1).expand_as(dropped_first)
    assert dropped_first[real].any() and dropped_second[real].any()
    assert (dropped_first != dropped_second)[real].float().mean() > 0.05  # p = 0.1 each: ~18% disagree
    assert parts["adv_loss"] > 0


def test_rdrop_without_dropout_has_no_kl_and_twice_plains_loss_and_gradient(batch):
    model = _dropout_off(tiny_model("bert", dtype=torch.float64, train=True))
    plain = _method(model, algo="plain")
    method = _method(model, algo="rdrop")
    loss, parts = method.loss(model, dict(batch))
    plain_loss, _ = plain.objective(model, dict(batch))
    assert parts["adv_loss"] == pytest.approx(0.0, abs=1e-15)
    assert float(loss.detach()) == pytest.approx(2 * float(plain_loss.detach()), rel=1e-12)
    assert parts["task_loss"] == pytest.approx(float(plain_loss.detach()), rel=1e-12)
    # alpha = 0 (and here any alpha): plain's gradient direction, twice its length.
    zero = _method(model, algo="rdrop", reg_alpha=0.0)
    for mine, theirs in zip(_grads(zero.loss(model, dict(batch))[0], model), _grads(plain_loss, model)):
        assert torch.allclose(mine, 2 * theirs, rtol=1e-9, atol=1e-14)


def test_rdrop_inactive_is_plain_exactly(batch):
    model = tiny_model("bert", train=True)
    method = _method(model, algo="rdrop")
    method.active = False
    torch.manual_seed(SEED)
    loss, parts = method.objective(model, dict(batch))
    torch.manual_seed(SEED)
    plain_loss, _ = _method(model, algo="plain").objective(model, dict(batch))
    assert float(loss.detach()) == float(plain_loss.detach()) and set(parts) == {"task_loss", "adv_loss", "reg_loss"}


def test_rdrop_runs_through_train_batch(batch):
    model = tiny_model("bert", train=True)
    loss, parts = _method(model, algo="rdrop").train_batch(model, dict(batch), MeasureContext(model))
    assert math.isfinite(float(loss.detach())) and set(parts) == {"task_loss", "adv_loss", "reg_loss"}


# ------------------------------------------------------------------------------------ bad values

BAD = [
    (dict(algo="alum", adv_alpha=-1.0), "adv_alpha must be a finite number >= 0 for algo='alum', got -1.0"),
    (dict(algo="alum", noise_var=-1e-5), "noise_var must be a finite number >= 0 for algo='alum', got -1e-05"),
    (
        dict(algo="alum", alum_step_size=float("nan")),
        "alum_step_size must be a finite number >= 0 for algo='alum', got nan",
    ),
    (dict(algo="alum", noise_gamma=0.0), "noise_gamma must be a finite number > 0 for algo='alum', got 0.0"),
    (
        dict(algo="alum", noise_var=0.0, alum_step_size=0.0),
        "noise_var and alum_step_size are both 0 for algo='alum': its perturbation would be exactly 0; give either "
        "a size",
    ),
    (
        dict(algo="alum", alum_epsilon=1e-3),
        "alum_epsilon=0.001 is used by alum_projection='paper' only (the code's normalization has no ball); leave it "
        "at 1e-05 or set alum_projection='paper'",
    ),
    (
        dict(algo="alum", alum_projection="paper", project_norm_type="l1"),
        "project_norm_type='l1' (the code's sign step) has no ball to project onto for alum_projection='paper'; use "
        "'inf' (the paper's) or 'l2'",
    ),
    (
        dict(algo="alum", adv_step_size=1e-3),
        "adv_step_size=0.001 is SMART's and SiFT's knob, not used by algo='alum'; leave it unset (algo='alum''s knobs: "
        "adv_alpha, noise_var, alum_step_size, noise_gamma, project_norm_type, alum_projection, alum_epsilon)",
    ),
    (dict(algo="rdrop", reg_alpha=-0.5), "reg_alpha must be a finite number >= 0 for algo='rdrop', got -0.5"),
    (
        dict(algo="rdrop", rdrop_reduction="batchmean"),
        "rdrop_reduction must be one of 'mean', 'sum' for algo='rdrop'; got 'batchmean'",
    ),
    (
        dict(algo="rdrop", perturb_at="word_embeddings"),
        "perturb_at='word_embeddings' is not used by algo='rdrop' (it perturbs no input); leave it unset",
    ),
]


BAD_IDS = [
    "alum-alpha-neg",
    "alum-noise-neg",
    "alum-step-nan",
    "alum-gamma0",
    "alum-no-size",
    "alum-eps-unused",
    "alum-paper-l1",
    "alum-smart-step",
    "rdrop-alpha-neg",
    "rdrop-reduction",
    "rdrop-point",
]


@pytest.mark.parametrize("config, message", BAD, ids=BAD_IDS)
def test_bad_values_are_refused_by_name(config, message):
    with pytest.raises(ValueError) as err:
        RunConfig.from_dict(config)
    assert str(err.value) == message
    robustness_log(f"`{', '.join(f'{k}={v!r}' for k, v in config.items())}`", str(err.value))


def test_alum_on_a_model_without_an_embedding_block_names_the_method_and_point():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=100, n_positions=32))
    with pytest.raises(UnsupportedModelError) as err:
        _method(model, algo="alum")
    message = str(err.value)
    assert message == (
        "algo='alum' perturbs the model's embeddings at perturb_at='embedding_output', which it "
        "cannot reach: GPT2ForSequenceClassification: no embedding block found (expected "
        "`model.base_model.embeddings`); siftkit supports encoder classifiers such as BERT, RoBERTa, "
        "DeBERTa, DistilBERT, ELECTRA and ALBERT"
    )
    robustness_log("`algo='alum'` on a GPT2ForSequenceClassification (no embedding block)", message)


# ------------------------------------------------------------------------------ through the loops


def _smoke(tmp_path, name, **changes):
    cfg = RunConfig.from_yaml(SMOKE, output_dir=str(tmp_path / name), cpu=True, **changes)
    return train(cfg, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("algo, knob", [("alum", {"adv_alpha": 2.0}), ("rdrop", {"reg_alpha": 0.5})])
def test_smoke_train_each(tmp_path, algo, knob):
    record = _smoke(tmp_path, algo, algo=algo, **knob)
    assert record["config"]["algo"] == algo and record["config"]["algo_args"][next(iter(knob))] == next(
        iter(knob.values())
    )
    rows = record["history"]
    assert rows and all(math.isfinite(r["loss"]) for r in rows)
    assert all(
        r["adv_loss"] > 0 and r["reg_loss"] == pytest.approx(next(iter(knob.values())) * r["adv_loss"]) for r in rows
    )
    if algo == "alum":
        assert all(0 < r["relative_perturbation"] < 10 for r in rows)
    assert all(math.isfinite(v) for v in record["metrics"].values() if isinstance(v, float))


@pytest.mark.slow
def test_adv_stages_last_shares_plains_stage1(tmp_path):
    cache = str(tmp_path / "cache")
    plain = _smoke(tmp_path, "plain", algo="plain", stage_cache_dir=cache)
    for algo in ("alum", "rdrop"):
        last = _smoke(tmp_path, algo, algo=algo, adv_stages="last", stage_cache_dir=cache)
        assert last["meta"]["stages_from_cache"] == ["twitter"]
        assert last["stages"][0]["cache_key"] == plain["stages"][0]["cache_key"]
        assert [s["adversarial"] for s in last["stages"]] == [False, True]
    # Trained rather than read from the cache, stage 1 of ALUM-in-stage-2-only is plain's, batch for batch.
    alone = _smoke(tmp_path, "alum_alone", algo="alum", adv_stages="last")
    plain_rows = [r for r in plain["history"] if r["stage"] == "twitter"]
    alum_rows = [r for r in alone["history"] if r["stage"] == "twitter"]
    assert [r["loss"] for r in alum_rows] == [r["loss"] for r in plain_rows]
    assert all(r["adv_loss"] == 0 for r in alum_rows)
    assert any(r["adv_loss"] > 0 for r in alone["history"] if r["stage"] != "twitter")


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo, knobs", [("alum", {"adv_alpha": 2.0, "noise_var": 1e-4}), ("rdrop", {"algo_args": {"reg_alpha": 0.5}})]
)
def test_adversarial_trainer_trains_each_with_its_knobs_by_name(tmp_path, algo, knobs):
    from datasets import Dataset
    from transformers import TrainingArguments

    from siftkit import AdversarialTrainer

    tok = tokenizer()
    texts = list(TEXTS) * 4
    ds = Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"])
    args = TrainingArguments(
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
        max_steps=3,
    )
    trainer = AdversarialTrainer(
        model=tiny_model("bert", train=True), args=args, train_dataset=ds, processing_class=tok, algo=algo, **knobs
    )
    given = knobs.get("algo_args", knobs)
    assert {k: trainer.run_config.algo_args[k] for k in given} == given
    result = trainer.train()
    assert math.isfinite(result.training_loss) and trainer.state.global_step == 3
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert logs and all(row["adv_loss"] > 0 for row in logs)
    # return_outputs during training: the batch's own rows (R-Drop's first forward), not the doubled batch.
    batch = make_batch(labels=LABELS)
    trainer.model.train()
    _, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    assert outputs.logits.shape == (len(LABELS), 2)
