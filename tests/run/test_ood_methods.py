"""LP-FT, WiSE-FT, re-initialised top layers and layer-wise learning-rate decay (docs/methods/ood.md).

Each test checks what the method promises, on a tiny random model: LP-FT's probe leaves every
encoder weight bit-identical and the full phase starts from the probed head; WiSE-FT at alpha 1
is the fine-tuned run exactly, at alpha 0 the starting encoder with the fine-tuned head, and
alpha is chosen on validation even where the test metric would pick another; re-initialisation
changes the top k layers and nothing below; the optimizer's groups carry lr * gamma^(L - l);
the stage cache keys on what acts in a stage; bad values are clear errors naming the field; and
`train` and `sweep` run all four with plain and with SiFT.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import robustness_log, tiny_model
from safetensors.torch import load_file

import siftkit.run.ood as ood
import siftkit.run.training as training
from siftkit.core import weight_space
from siftkit.core.layers import layer_lr_groups, layer_stack, reinit_top_layers
from siftkit.core.split import UnsupportedModelError, unwrap
from siftkit.methods.base import Method
from siftkit.run.config import WISE_FT_ALPHAS, RunConfig
from siftkit.run.training import train

BASE = dict(
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
    uci_val_size=40,
    seed=5,
    cpu=True,
    eval_smoothness=False,
)


def _cfg(tmp_path, name="r", **changes) -> RunConfig:
    return RunConfig(**{**BASE, "output_dir": str(tmp_path / name), **changes})


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}


def _encoder_keys(model) -> list[str]:
    prefix = unwrap(model).base_model_prefix + "."
    return [k for k in unwrap(model).state_dict() if k.startswith(prefix)]


# ----------------------------------------------------------------------------- LP-FT


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["plain", "smart"])
def test_lp_ft_probe_keeps_the_encoder_bit_identical_and_the_full_phase_starts_from_the_probed_head(
    tmp_path, monkeypatch, algo
):
    phases: list[dict] = []
    batches: list[tuple] = []
    real_stage, real_batch = training._run_stage, Method.train_batch

    def spy_stage(stage_index, stage, run, resume_state, phase="full"):
        entry = _state(run.model)
        real_stage(stage_index, stage, run, resume_state, phase)
        phases.append({"stage": stage.name, "phase": phase, "entry": entry, "exit": _state(run.model)})

    def spy_batch(self, model, batch, ctx):
        frozen = not any(p.requires_grad for p in unwrap(model).base_model.parameters())
        batches.append(("probe" if frozen else "full", unwrap(model).base_model.training, self.active))
        return real_batch(self, model, batch, ctx)

    monkeypatch.setattr(training, "_run_stage", spy_stage)
    monkeypatch.setattr(Method, "train_batch", spy_batch)
    record = train(_cfg(tmp_path, algo=algo, lp_ft_epochs=2, lp_ft_learning_rate=5e-2), progress=False)

    assert [(p["stage"], p["phase"]) for p in phases] == [("twitter", "full"), ("uci_probe", "probe"), ("uci", "full")]
    probe, full = phases[1], phases[2]
    encoder = [k for k in probe["entry"] if k.startswith("bert.")]
    assert encoder and all(torch.equal(probe["entry"][k], probe["exit"][k]) for k in encoder)
    head = [k for k in probe["entry"] if k not in encoder]
    assert any(not torch.equal(probe["entry"][k], probe["exit"][k]) for k in head)  # the probe trained the head
    assert all(torch.equal(probe["exit"][k], full["entry"][k]) for k in probe["exit"])  # full starts from it
    assert any(not torch.equal(full["entry"][k], full["exit"][k]) for k in encoder)  # then everything trains
    # In the probe the encoder is in eval mode and the method is plain fine-tuning (inactive).
    probe_batches = [b for b in batches if b[0] == "probe"]
    assert len(probe_batches) == 4 and all(
        not training_mode and not active for _, training_mode, active in probe_batches
    )
    # plain's batch is plain's anyway (its method is never active); SMART's acts again after the probe
    assert all(
        training_mode and active == (algo != "plain") for phase, training_mode, active in batches if phase == "full"
    )
    assert record["stages"][1]["probe_epochs_run"] == 2
    rows = [r for r in record["history"] if r["stage"] == "uci_probe"]
    assert len(rows) == 4 and all(r["learning_rate"] <= 5e-2 for r in rows)
    assert [r["stage"] for r in record["val_history"]] == ["uci_probe", "uci_probe", "uci", "uci"]


@pytest.mark.slow
def test_lp_ft_stages_first_probes_stage_1_only_and_shares_nothing_with_plain(tmp_path):
    cache = str(tmp_path / "cache")
    plain = train(_cfg(tmp_path, "plain", stage_cache_dir=cache), progress=False)
    last = train(_cfg(tmp_path, "last", lp_ft_epochs=1, stage_cache_dir=cache), progress=False)
    first = train(_cfg(tmp_path, "first", lp_ft_epochs=1, lp_ft_stages="first", stage_cache_dir=cache), progress=False)
    # the default (last) probes stage 2 only, so it shares plain's stage 1; "first" does not
    assert last["meta"]["stages_from_cache"] == ["twitter"]
    assert first["meta"]["stages_from_cache"] == []
    assert first["stages"][0]["cache_key"] != plain["stages"][0]["cache_key"]
    assert sorted({r["stage"] for r in first["history"]}) == ["twitter", "twitter_probe", "uci"]


@pytest.mark.slow
def test_a_run_interrupted_in_the_probe_resumes_exactly(tmp_path):
    from siftkit.run.checkpoint import latest_checkpoint

    class Crash(Exception):
        pass

    cfg = _cfg(tmp_path, "ref", algo="smart", lp_ft_epochs=2, save_steps=1, logging_steps=2)
    ref = train(cfg, progress=False)
    real = training.save_checkpoint
    out = tmp_path / "cut"

    def crash_at(step):
        def save(accelerator, where, global_step, state, **kw):
            path = real(accelerator, where, global_step, state, **kw)
            if global_step == step:
                raise Crash(step)
            return path

        return save

    # stage 1: steps 1-2; the probe: steps 3-6 (2 epochs x 2); the full phase: steps 7-10
    for step in (4, 7):  # mid-probe, then the full phase's first step
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(training, "save_checkpoint", crash_at(step))
            with pytest.raises(Crash):
                train(cfg.replace(output_dir=str(out), resume=step != 4), progress=False)
        assert latest_checkpoint(out).name == f"step-{step:07d}"
    resumed = train(cfg.replace(output_dir=str(out), resume=True), progress=False)
    assert resumed["history"] == ref["history"] and resumed["metrics"] == ref["metrics"]


@pytest.mark.slow
def test_early_stopping_in_the_probe_restores_its_best_epoch_and_the_full_phase_starts_there(tmp_path, monkeypatch):
    """Scripted probe validation 0.7, 0.5, 0.4 with patience 2: the probe stops after its third
    epoch (of four), goes back to its first epoch's head, and the full phase starts from that."""
    scores = iter([0.7, 0.5, 0.4, 0.1, 0.2])  # three probe epochs, then the full phase's two
    snapshots, entries = [], []
    real_eval, real_stage = training.evaluate, training._run_stage

    def scripted(model, evals, tokenizer, cfg, accelerator, *, smoothness=None):
        metrics = real_eval(model, evals, tokenizer, cfg, accelerator, smoothness=smoothness)
        if smoothness is False and "uci_val" in evals:
            snapshots.append(_state(model))
            metrics["uci_val_accuracy"] = next(scores)
        return metrics

    def spy_stage(stage_index, stage, run, resume_state, phase="full"):
        entries.append((stage.name, _state(run.model)))
        return real_stage(stage_index, stage, run, resume_state, phase)

    monkeypatch.setattr(training, "evaluate", scripted)
    monkeypatch.setattr(training, "_run_stage", spy_stage)
    record = train(_cfg(tmp_path, lp_ft_epochs=4, lp_ft_learning_rate=5e-2, early_stopping_patience=2), progress=False)
    uci = record["stages"][1]
    assert (uci["probe_epochs_run"], uci["probe_best_epoch"]) == (3, 0)
    assert not torch.equal(snapshots[0]["classifier.weight"], snapshots[2]["classifier.weight"])
    full_entry = dict(entries)["uci"]
    assert all(torch.equal(full_entry[k], v) for k, v in snapshots[0].items())
    assert (uci["epochs_run"], uci["best_epoch"]) == (2, 1)  # the full phase's own early stopping, afresh


# ----------------------------------------------------------------------------- WiSE-FT


def test_interpolation_endpoints_are_exact_and_the_head_stays_fine_tuned():
    start, tuned = tiny_model(seed=0), tiny_model(seed=1)
    keys = weight_space.scope_keys(start, "encoder")
    assert keys and all(k.startswith("bert.") for k in keys) and "classifier.weight" not in keys
    theta_0, theta_1 = weight_space.snapshot(start, keys), weight_space.snapshot(tuned, keys)
    for alpha, expected in ((0.0, theta_0), (1.0, theta_1)):
        model = tiny_model(seed=1)
        weight_space.load_entries(model, weight_space.interpolate(theta_0, theta_1, alpha))
        state = model.state_dict()
        assert all(torch.equal(state[k], expected[k]) for k in keys)
        assert torch.equal(state["classifier.weight"], tuned.state_dict()["classifier.weight"])
    mid = weight_space.interpolate(theta_0, theta_1, 0.3)
    k = keys[3]
    assert torch.allclose(mid[k], 0.7 * theta_0[k] + 0.3 * theta_1[k], rtol=0, atol=0)
    assert "classifier.weight" in weight_space.scope_keys(start, "model")


def test_alpha_is_chosen_on_validation_never_on_test():
    # A synthetic curve where the test metric favours alpha 0.2 and validation favours 0.6.
    curve = [
        {"alpha": a, "uci_val_accuracy": 0.9 - abs(a - 0.6), "uci_test_accuracy": 0.9 - abs(a - 0.2)}
        for a in WISE_FT_ALPHAS
    ]
    assert weight_space.choose_alpha(curve, "uci_val_accuracy") == 0.6
    # ties go to the larger alpha (nearer the fine-tuned model); a NaN never wins
    tie = [{"alpha": 0.3, "v": 0.8}, {"alpha": 0.7, "v": 0.8}, {"alpha": 1.0, "v": math.nan}]
    assert weight_space.choose_alpha(tie, "v") == 0.7
    with pytest.raises(ValueError, match="no alpha has a finite v"):
        weight_space.choose_alpha([{"alpha": 0.5, "v": math.nan}], "v")


@pytest.mark.slow
def test_wise_ft_in_a_run_chooses_on_validation_and_records_both_models(tmp_path, monkeypatch):
    """The run's own loop with evaluations replaced by a synthetic curve (test best at 0.2,
    validation best at 0.6): the run keeps 0.6, its metrics are 0.6's, alpha 1's are kept too."""
    real = ood.evaluate
    calls = []

    def fake(model, evals, tokenizer, cfg, accelerator, smoothness=None):
        out = real(model, evals, tokenizer, cfg, accelerator, smoothness=False)
        alpha = cfg.wise_ft_alphas[len(calls)] if len(calls) < len(cfg.wise_ft_alphas) else 0.6
        calls.append(alpha)
        out.update(uci_val_accuracy=0.9 - abs(alpha - 0.6), uci_test_accuracy=0.9 - abs(alpha - 0.2))
        return out

    monkeypatch.setattr(ood, "evaluate", fake)
    record = train(_cfg(tmp_path, wise_ft=True), progress=False)
    wise = record["wise_ft"]
    assert wise["alpha"] == 0.6 == record["metrics"]["wise_ft_alpha"] and wise["select_on"] == "uci_val_accuracy"
    assert [row["alpha"] for row in wise["curve"]] == list(WISE_FT_ALPHAS)
    assert max(wise["curve"], key=lambda r: r["uci_test_accuracy"])["alpha"] == pytest.approx(0.2)
    assert record["metrics"]["uci_test_accuracy"] == pytest.approx(0.9 - 0.4)
    assert wise["finetuned"]["uci_test_accuracy"] != record["metrics"]["uci_test_accuracy"]
    on_disk = json.loads((tmp_path / "r" / "results.json").read_text())
    assert on_disk["wise_ft"] == wise


@pytest.mark.slow
def test_wise_ft_at_alpha_1_is_the_fine_tuned_run_and_at_alpha_0_the_starting_encoder(tmp_path):
    from accelerate.utils import set_seed

    from siftkit.run.models import load_model

    plain = train(_cfg(tmp_path, "plain", save_model=True, eval_smoothness=True), progress=False)
    wise = train(_cfg(tmp_path, "wise", wise_ft=True, eval_smoothness=True), progress=False)
    finetuned = wise["wise_ft"]["finetuned"]
    stage2 = {k: v for k, v in plain["metrics"].items() if k.startswith(("uci_val_", "uci_test_"))}
    assert finetuned == stage2  # alpha = 1 is the fine-tuned model, smoothness and all
    one = next(r for r in wise["wise_ft"]["curve"] if r["alpha"] == 1.0)
    assert {k: v for k, v in one.items() if k != "alpha"} == {k: v for k, v in stage2.items() if k in one}
    assert wise["history"] == plain["history"]  # WiSE-FT acts after training only
    # alpha 0 alone: the model kept (and saved) is the starting encoder with the fine-tuned head.
    zero = train(_cfg(tmp_path, "zero", wise_ft=True, wise_ft_alphas=[0.0], save_model=True), progress=False)
    assert zero["metrics"]["wise_ft_alpha"] == 0.0
    set_seed(BASE["seed"])
    start, _ = load_model("random:bert", num_labels=2)  # the run's seeded initialisation
    saved = load_file(str(tmp_path / "zero" / "model" / "model.safetensors"))
    tuned = load_file(str(tmp_path / "plain" / "model" / "model.safetensors"))
    encoder = _encoder_keys(start)
    assert all(torch.equal(saved[k], start.state_dict()[k]) for k in encoder if k in saved)
    assert torch.equal(saved["classifier.weight"], tuned["classifier.weight"])
    assert not torch.equal(saved["classifier.weight"], start.state_dict()["classifier.weight"])


@pytest.mark.slow
def test_theta_0_is_l2sps_anchor(tmp_path):
    cfg = _cfg(tmp_path, wise_ft=True, l2sp_weight=0.1, reinit_layers=1)
    accelerator = training._make_accelerator(cfg)
    run = training._prepare(cfg, tmp_path, accelerator, False)
    names = {id(p): n for n, p in unwrap(run.model).named_parameters()}
    anchors = {names[id(p)]: a for p, a in zip(run.method.l2sp.params, run.method.l2sp.anchor)}
    assert anchors and set(anchors) <= set(run.theta_0)
    assert all(torch.equal(run.theta_0[n], a) for n, a in anchors.items())


# ----------------------------------------------------------------------------- re-init


def _pretrained_like(seed: int = 0):
    """A tiny model whose weights look trained (no zero bias, no unit LayerNorm) and are marked as
    loaded, as transformers marks a checkpoint's weights (its init functions then skip them)."""
    model = tiny_model(seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.rand_like(p) * 0.1 + 0.05)
            p._is_hf_initialized = True
    return model


def test_reinit_changes_the_top_k_layers_and_nothing_below():
    model = _pretrained_like()
    before = _state(model)
    names = reinit_top_layers(model, 1, seed=3)
    after = model.state_dict()
    top = [k for k in before if k.startswith(("bert.encoder.layer.1.", "bert.pooler."))]
    rest = [k for k in before if k not in top]
    assert top and set(names) == {k for k in top if not k.endswith("position_ids")}
    assert all(not torch.equal(before[k], after[k]) for k in top)  # every parameter of the top layer and the pooler
    assert all(torch.equal(before[k], after[k]) for k in rest)  # embeddings, layer 0 and the head untouched
    assert all(getattr(p, "_is_hf_initialized", False) for p in model.parameters())  # marks put back
    # seeded: the same seed gives the same layers, another seed others; the global RNG is untouched
    again = _pretrained_like()
    torch.manual_seed(123)
    reinit_top_layers(again, 1, seed=3)
    after_draw = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after_draw, torch.rand(3))
    assert all(torch.equal(after[k], again.state_dict()[k]) for k in top)
    other = _pretrained_like()
    reinit_top_layers(other, 1, seed=4)
    assert not torch.equal(other.state_dict()[top[0]], after[top[0]])
    # std of a re-initialised Linear is the config's initializer_range
    q = model.bert.encoder.layer[1].attention.self.query.weight
    assert q.std().item() == pytest.approx(model.config.initializer_range, rel=0.3)


def test_reinit_all_layers_and_models_without_a_pooler():
    roberta = _pretrained_like_arch("roberta")
    before = _state(roberta)
    reinit_top_layers(roberta, 2, seed=0)
    changed = {k for k, v in roberta.state_dict().items() if not torch.equal(before[k], v)}
    assert {k.split(".")[3] for k in changed if k.startswith("roberta.encoder.layer.")} == {"0", "1"}
    assert not any(k.startswith(("roberta.embeddings.", "classifier.")) for k in changed)


def _pretrained_like_arch(arch):
    from siftkit.run.models import build_random_model

    torch.manual_seed(0)
    model = build_random_model(arch, vocab_size=500)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.07)
    return model


@pytest.mark.slow
def test_reinit_in_a_run_happens_before_stage_1_and_names_the_field_when_too_many(tmp_path):
    events = []
    real_reinit, real_stage = training.reinit_top_layers, training._run_stage

    def spy_reinit(model, k, *, seed):
        events.append(("reinit", k, seed))
        return real_reinit(model, k, seed=seed)

    def spy_stage(stage_index, stage, run, resume_state, phase="full"):
        events.append(("stage", stage.name))
        return real_stage(stage_index, stage, run, resume_state, phase)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "reinit_top_layers", spy_reinit)
        mp.setattr(training, "_run_stage", spy_stage)
        record = train(_cfg(tmp_path, reinit_layers=2), progress=False)
    assert events == [("reinit", 2, BASE["seed"]), ("stage", "twitter"), ("stage", "uci")]
    assert record["config"]["reinit_layers"] == 2
    with pytest.raises(ValueError) as info:
        train(_cfg(tmp_path, "too_many", reinit_layers=3), progress=False)
    assert "reinit_layers=3" in str(info.value) and "has 2" in str(info.value)
    robustness_log("reinit_layers=3 on model_name='random:bert' (2 layers)", str(info.value))
    assert not (tmp_path / "too_many").exists()


def test_albert_shares_its_layers_and_is_refused_by_name():
    from siftkit.run.models import build_random_model

    albert = build_random_model("albert", vocab_size=500)
    for field in ("reinit_layers", "layer_lr_decay"):
        with pytest.raises(UnsupportedModelError, match=field) as info:
            layer_stack(albert, field=field)
    robustness_log("layer_lr_decay=0.9 on model_name='random:albert' (layers sharing their weights)", str(info.value))


def test_lp_ft_on_several_processes_is_refused_by_name(tmp_path):
    class TwoProcesses:
        num_processes = 2

    cfg = _cfg(tmp_path, lp_ft_epochs=1)
    with pytest.raises(ValueError) as info:
        training._check_layer_settings(cfg, tiny_model(), TwoProcesses())
    assert "lp_ft_epochs=1" in str(info.value) and "2 launched" in str(info.value)
    robustness_log("lp_ft_epochs=1 launched on 2 processes (DDP)", str(info.value))
    training._check_layer_settings(_cfg(tmp_path, reinit_layers=2, layer_lr_decay=0.9), tiny_model(), TwoProcesses())


# ----------------------------------------------------------------------------- layer-wise decay


def test_layer_groups_carry_lr_gamma_power_L_minus_l():
    model = tiny_model()
    groups = layer_lr_groups(model, list(model.parameters()), 1e-3, 0.5)
    # 2 blocks: head (and pooler) l = 3, blocks 2 and 1, embeddings 0; L = 3
    assert [(g["name"], g["layer"]) for g in groups] == [("head", 3), ("block_2", 2), ("block_1", 1), ("embeddings", 0)]
    assert [g["lr"] for g in groups] == [1e-3 * 0.5 ** (3 - g["layer"]) for g in groups]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in groups[0]["params"]} == {
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "classifier.weight",
        "classifier.bias",
    }
    assert all(names[id(p)].startswith("bert.embeddings.") for p in groups[-1]["params"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo, extra", [("plain", {}), ("smart", {"l2sp_weight": 0.01}), ("sift", {"lp_ft_epochs": 1})]
)
def test_the_optimizer_of_every_stage_has_the_decayed_groups(tmp_path, monkeypatch, algo, extra):
    seen = []
    real = training._stage_loop

    def spy(stage_index, stage, run, phase="full"):
        loop = real(stage_index, stage, run, phase)
        seen.append(
            (
                stage.name,
                phase,
                [(g.get("layer"), g["initial_lr"], len(g["params"])) for g in loop.optimizer.param_groups],
            )
        )
        return loop

    monkeypatch.setattr(training, "_stage_loop", spy)
    train(_cfg(tmp_path, algo=algo, layer_lr_decay=0.8, uci_learning_rate=2e-3, **extra), progress=False)
    full = [s for s in seen if s[1] == "full"]
    assert [s[0] for s in full] == ["twitter", "uci"]
    for (_name, _, groups), lr in zip(full, (1e-3, 2e-3)):
        assert [layer for layer, _, _ in groups] == [3, 2, 1, 0]
        assert [g_lr for _, g_lr, _ in groups] == [lr * 0.8 ** (3 - layer) for layer, _, _ in groups]
    for _name, phase, groups in seen:
        if phase == "probe":  # LP-FT's probe trains the head alone (the classifier), at its own rate
            assert groups == [(None, 1e-3, 2)]


@pytest.mark.slow
def test_without_decay_the_optimizer_is_one_group_as_before(tmp_path, monkeypatch):
    seen = []
    real = training._stage_loop

    def spy(stage_index, stage, run, phase="full"):
        loop = real(stage_index, stage, run, phase)
        seen.append(len(loop.optimizer.param_groups))
        return loop

    monkeypatch.setattr(training, "_stage_loop", spy)
    train(_cfg(tmp_path), progress=False)
    assert seen == [1, 1]


# ----------------------------------------------------------------------------- stage sharing


@pytest.mark.slow
def test_the_cache_key_holds_what_acts_in_a_stage(tmp_path):
    cache = str(tmp_path / "cache")
    runs = {
        name: train(_cfg(tmp_path, name, stage_cache_dir=cache, **change), progress=False)
        for name, change in {
            "plain": {},
            "wise": {"wise_ft": True},
            "lp_last": {"lp_ft_epochs": 1},
            "decay": {"layer_lr_decay": 0.9},
            "reinit": {"reinit_layers": 1},
        }.items()
    }
    key = {name: r["stages"][0]["cache_key"] for name, r in runs.items()}
    # WiSE-FT acts after the last stage, LP-FT (lp_ft_stages last) in stage 2: both share plain's stage 1
    assert key["wise"] == key["lp_last"] == key["plain"]
    assert runs["wise"]["meta"]["stages_from_cache"] == ["twitter"]
    # decay and re-initialisation change stage 1
    assert len({key["plain"], key["decay"], key["reinit"]}) == 3
    assert runs["decay"]["meta"]["stages_from_cache"] == runs["reinit"]["meta"]["stages_from_cache"] == []
    # a run from the cache ends as one that trained the stage
    alone = train(_cfg(tmp_path, "wise_alone", wise_ft=True), progress=False)
    assert alone["metrics"] == runs["wise"]["metrics"] and alone["wise_ft"] == runs["wise"]["wise_ft"]


# ----------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reinit_layers": -1}, "reinit_layers must be a finite number >= 0, got -1"),
        ({"layer_lr_decay": 0}, "layer_lr_decay must be in (0, 1]"),
        ({"layer_lr_decay": -0.5}, "layer_lr_decay must be in (0, 1]"),
        ({"layer_lr_decay": 1.2}, "layer_lr_decay must be in (0, 1]"),
        ({"layer_lr_decay": float("nan")}, "layer_lr_decay must be in (0, 1]"),
        (
            {"wise_ft": True, "uci_val_size": 40, "wise_ft_alphas": [0.5, 1.5]},
            "wise_ft_alphas must hold numbers in [0, 1]",
        ),
        (
            {"wise_ft": True, "uci_val_size": 40, "wise_ft_alphas": "-0.1,1"},
            "wise_ft_alphas must hold numbers in [0, 1]",
        ),
        ({"wise_ft": True, "uci_val_size": 40, "wise_ft_alphas": []}, "wise_ft_alphas is empty"),
        ({"wise_ft": True, "uci_val_size": 40, "wise_ft_alphas": "0.5,0.5"}, "wise_ft_alphas lists 0.5 more than once"),
        ({"wise_ft": True, "uci_val_size": 40, "wise_ft_alphas": "0,half"}, "'half' is not a number"),
        ({"wise_ft": True}, "wise_ft=True chooses alpha on the last stage's validation set"),
        ({"wise_ft": True, "uci_val_size": 40, "wise_ft_scope": "head"}, "wise_ft_scope must be one of"),
        ({"wise_ft_alphas": [0.0, 1.0]}, "wise_ft_alphas=[0.0, 1.0] is a setting of wise_ft, which is off"),
        ({"lp_ft_learning_rate": 0.01}, "lp_ft_learning_rate=0.01 is a setting of lp_ft_epochs, which is off"),
        ({"lp_ft_epochs": -1}, "lp_ft_epochs must be a finite number >= 0, got -1"),
        ({"lp_ft_epochs": 1, "lp_ft_learning_rate": 0}, "lp_ft_learning_rate must be a finite number > 0"),
        ({"lp_ft_epochs": 1, "lp_ft_stages": "middle"}, "lp_ft_stages must be one of"),
        (
            {"lp_ft_epochs": 2, "early_stopping_patience": 1},
            "lp_ft_stages='last' probes stage(s) 'uci', which have no validation set",
        ),
        (
            {"lp_ft_epochs": 1, "freeze_encoder": True},
            "lp_ft_epochs=1 probes the head before fine-tuning the whole model",
        ),
        ({"layer_lr_decay": 0.9, "freeze_encoder": True}, "layer_lr_decay=0.9 acts on the encoder's layers"),
        ({"wise_ft": True, "uci_val_size": 40, "freeze_encoder": True}, "freeze_encoder=True keeps it at theta_0"),
    ],
)
def test_bad_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError) as info:
        RunConfig(**kwargs)
    assert message in str(info.value)
    robustness_log("RunConfig(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")", str(info.value))


def test_values_read_the_same_from_yaml_cli_and_notebooks(tmp_path):
    from siftkit.cli.args import config_from_args, config_parser

    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text(
        "wise_ft: true\nuci_val_size: 40\nwise_ft_alphas: [0, 0.5, 1]\nlp_ft_epochs: 2\n"
        "layer_lr_decay: 0.95\nreinit_layers: 1\n"
    )
    from_yaml = RunConfig.from_yaml(yaml_file)
    args = config_parser("t").parse_args(
        [
            "--wise_ft",
            "--uci_val_size",
            "40",
            "--wise_ft_alphas",
            "0,0.5,1",
            "--lp_ft_epochs",
            "2",
            "--layer_lr_decay",
            "0.95",
            "--reinit_layers",
            "1",
        ]
    )
    from_cli = config_from_args(args)
    from_notebook = RunConfig.from_dict(
        {
            "wise_ft": "True",
            "uci_val_size": 40,
            "wise_ft_alphas": "[0, 0.5, 1]",
            "lp_ft_epochs": 2,
            "layer_lr_decay": 0.95,
            "reinit_layers": 1,
        }
    )
    for cfg in (from_yaml, from_cli, from_notebook):
        assert (cfg.wise_ft, cfg.wise_ft_alphas, cfg.lp_ft_epochs, cfg.layer_lr_decay, cfg.reinit_layers) == (
            True,
            [0.0, 0.5, 1.0],
            2,
            0.95,
            1,
        )
    assert RunConfig.from_dict(from_cli.to_dict()) == from_cli  # a record rebuilds
    one = config_from_args(
        config_parser("t").parse_args(["--wise_ft", "--uci_val_size", "40", "--wise_ft_alphas", "0.5"])
    )
    assert one.wise_ft_alphas == [0.5]


# ----------------------------------------------------------------------------- smoke: train and sweep

ALL_FOUR = [
    "--lp_ft_epochs",
    "1",
    "--wise_ft",
    "--wise_ft_alphas",
    "0,0.5,1",
    "--reinit_layers",
    "1",
    "--layer_lr_decay",
    "0.9",
    "--uci_val_size",
    "16",
]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["plain", "sift"])
def test_train_cli_runs_all_four(tmp_path, smoke_params, algo):
    from siftkit.cli.main import main

    out = tmp_path / algo
    assert (
        main(
            [
                "train",
                "--params",
                str(smoke_params),
                "--algo",
                algo,
                "--cpu",
                "--eval_smoothness",
                "false",
                "--output_dir",
                str(out),
                *ALL_FOUR,
            ]
        )
        == 0
    )
    record = json.loads((out / "results.json").read_text())
    assert record["wise_ft"]["alphas"] == [0.0, 0.5, 1.0] and record["stages"][1]["probe_epochs_run"] == 1
    assert {r["stage"] for r in record["history"]} == {"twitter", "uci_probe", "uci"}
    assert record["config"]["reinit_layers"] == 1 and record["config"]["layer_lr_decay"] == 0.9


@pytest.mark.subprocess
def test_sweep_runs_the_new_fields_with_plain_and_sift(tmp_path, smoke_params, capsys):
    from siftkit.cli.main import main

    out = tmp_path / "sw"
    assert (
        main(
            [
                "sweep",
                "--params",
                str(smoke_params),
                "--algos",
                "plain,sift",
                "--seeds",
                "1",
                "--tag",
                "ood",
                "--output-dir",
                str(out),
                "--cpu",
                "--eval_smoothness",
                "false",
                *ALL_FOUR,
            ]
        )
        == 0
    )
    records = sorted(out.glob("twitter_to_uci/*/seed1/results.json"))
    assert [p.parent.parent.name for p in records] == ["plain-ood", "sift-ood"]
    for path in records:
        r = json.loads(path.read_text())
        assert r["wise_ft"]["alpha"] in (0.0, 0.5, 1.0) and r["config"]["lp_ft_epochs"] == 1
    # the fields are gridded like any other (planned here), but not WiSE-FT's own alpha list
    assert (
        main(
            [
                "sweep",
                "--params",
                str(smoke_params),
                "--algos",
                "plain,sift",
                "--seeds",
                "1",
                "--tag",
                "g",
                "--output-dir",
                str(out),
                "--wise_ft",
                "--uci_val_size",
                "16",
                "--dry-run",
                "--grid",
                "layer_lr_decay=0.9,1",
                "--grid",
                "lp_ft_epochs=0,1",
                "--grid",
                "reinit_layers=0,1",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.count("layer_lr_decay") >= 8
    assert (
        main(
            [
                "sweep",
                "--params",
                str(smoke_params),
                "--algos",
                "plain",
                "--seeds",
                "1",
                "--tag",
                "x",
                "--output-dir",
                str(out),
                "--wise_ft",
                "--uci_val_size",
                "16",
                "--grid",
                "wise_ft_alphas=0,1",
                "--dry-run",
            ]
        )
        == 2
    )
    assert "--grid wise_ft_alphas: this field cannot be gridded" in capsys.readouterr().err
