"""The offline default model, random architectures, and the error for an unknown name."""

import hashlib

import pytest
import torch
from safetensors.torch import load_file

from siftkit.run.models import DEFAULT_WEIGHTS_SHA256, RANDOM_ARCHS, ModelLoadError, default_model_dir, load_model


def test_offline_default_loads_with_hub_offline_and_has_a_new_head(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = default_model_dir()
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest == DEFAULT_WEIGHTS_SHA256
    torch.manual_seed(0)
    model, tok = load_model(None)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert model.classifier.out_features == 2
    # The encoder is the checkpoint's, the head is not in the checkpoint at all.
    saved = load_file(str(folder / "model.safetensors"))
    key = next(k for k in saved if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, saved[key])
    assert not any("classifier" in k for k in saved)
    torch.manual_seed(1)
    other, _ = load_model(None)
    assert not torch.equal(model.classifier.weight, other.classifier.weight)  # freshly initialised
    ids = tok(["offline works"], return_tensors="pt")
    assert model(**ids).logits.shape == (1, 2)


def test_unknown_model_offline_says_how_to_use_the_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_model("no-such-org/no-such-model")
    msg = str(err.value)
    assert "no-such-org/no-such-model" in msg and "offline default" in msg and "model_name" in msg


@pytest.mark.parametrize("arch", RANDOM_ARCHS)
def test_random_architectures_build_and_run(arch):
    model, tok = load_model(f"random:{arch}")
    batch = tok(["a b c", "d"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 2)


def test_bad_random_arch_and_num_labels():
    with pytest.raises(ModelLoadError, match="random:bert"):
        load_model("random:gpt")
    with pytest.raises(ValueError, match="num_labels"):
        load_model(None, num_labels=1)
