"""Mixed precision through accelerate: bf16 on CPU trains; the perturbation stays float32.

DESIGN trap 7: an fp16/bf16 step below the format's resolution is lost, so delta and its
arithmetic live in float32 whatever the model computes in; the divergences work in float32
from log-softmax, so R is float32 even when the logits are bf16.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import make_batch, tiny_model

from siftkit import SMART, EmbeddingSplit, RunConfig, SiFT
from siftkit.core.regularizers import AdversarialRegularizer

SMOKE = Path(__file__).resolve().parents[2] / "params" / "smoke.yaml"


@pytest.fixture(scope="module", autouse=True)
def _clean_accelerator_state():
    yield
    # Leave no bf16 AcceleratorState behind for other test modules in this process.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


@pytest.mark.parametrize("reg_cls", [SMART, SiFT])
@pytest.mark.parametrize("at", ["embedding_output", "word_embeddings"])
def test_perturbation_stays_float32_under_bf16_autocast(reg_cls, at):
    model = tiny_model("bert", train=True)
    batch = make_batch(labels=[0, 1, 0])
    split = EmbeddingSplit(model)
    reg = reg_cls(adv_epsilon=0.1, adv_step_size=0.05, adv_noise_std=0.02, perturb_at=at)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, z = split.forward_capture(batch, at)
        r = reg(split, batch, logits, z)
    assert logits.dtype == torch.bfloat16  # the model really ran in bf16
    assert reg.last_perturbation.dtype == torch.float32
    assert r.dtype == torch.float32 and bool(torch.isfinite(r)) and float(r.detach()) > 0
    # The perturbation is not rounded away: every real token carries one.
    mask = batch["attention_mask"].bool()
    assert bool((reg.last_perturbation.norm(dim=-1)[mask] > 0).all())
    r.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.slow
def test_train_bf16_on_cpu(tmp_path, data_dir, monkeypatch):
    from siftkit.run.training import train

    seen = []
    original = AdversarialRegularizer.forward

    def forward(self, split, batch, clean_logits, z=None):
        r = original(self, split, batch, clean_logits, z)
        seen.append(
            (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), self.last_perturbation.dtype, r.dtype)
        )
        return r

    monkeypatch.setattr(AdversarialRegularizer, "forward", forward)
    cfg = RunConfig.from_yaml(
        SMOKE,
        output_dir=str(tmp_path / "run"),
        algo="sift",
        cpu=True,
        mixed_precision="bf16",
        max_train_samples=8,
        max_eval_samples=8,
        data_dir=str(data_dir),
    )
    record = train(cfg, progress=False)
    assert record["meta"]["mixed_precision"] == "bf16"
    assert record["config"]["mixed_precision"] == "bf16"
    assert seen and set(seen) == {(True, torch.bfloat16, torch.float32, torch.float32)}
    assert all(math.isfinite(row["loss"]) for row in record["history"])
    assert record["meta"]["nonfinite_steps"] == 0 and record["meta"]["skipped_adversarial_steps"] == 0


def test_fp16_without_gpu_is_a_clear_error(tmp_path):
    from siftkit.run.training import train

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fp16 is available")
    cfg = RunConfig(output_dir=str(tmp_path / "run"), mixed_precision="fp16", cpu=True, model_name="random:bert")
    with pytest.raises(ValueError, match="mixed_precision='fp16'.*GPU.*'bf16'"):
        train(cfg, progress=False)


def test_precision_can_change_between_runs_in_one_process():
    # A notebook running bf16 after fp32 (accelerate's state is process-wide).
    from siftkit.run.training import _make_accelerator

    assert _make_accelerator(RunConfig(cpu=True, mixed_precision="bf16")).mixed_precision == "bf16"
    assert _make_accelerator(RunConfig(cpu=True, mixed_precision="no")).mixed_precision == "no"
    assert _make_accelerator(RunConfig(cpu=True, mixed_precision="bf16")).mixed_precision == "bf16"


def test_unknown_precision_names_the_field():
    with pytest.raises(ValueError, match="mixed_precision"):
        RunConfig(mixed_precision="fp8")


def test_adversarial_trainer_bf16_on_cpu(tmp_path):
    from datasets import Dataset
    from helpers import TEXTS, tokenizer
    from transformers import TrainingArguments

    from siftkit import AdversarialTrainer

    tok = tokenizer()
    texts = list(TEXTS) * 2
    ds = Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        use_cpu=True,
        bf16=True,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=3,
        max_steps=2,
        disable_tqdm=True,
    )
    trainer = AdversarialTrainer(
        model=tiny_model("bert", train=True),
        args=args,
        train_dataset=ds,
        processing_class=tok,
        algo="sift",
        adv_noise_std=0.05,
        adv_epsilon=0.2,
    )
    result = trainer.train()
    reg = trainer.adversarial_loss.regularizer
    assert math.isfinite(result.training_loss)
    assert trainer.accelerator.mixed_precision == "bf16"
    assert reg.last_perturbation.dtype == torch.float32 and reg.last_stats["perturbation_norm"] > 0
