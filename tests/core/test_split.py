"""siftkit.core.split: forward_from(embed(batch)) == model(**batch) for every arch and point.

DESIGN.md section 2, "Model-agnostic split", and trap 6 (hooks must not outlive a call).
"""

import pytest
import torch
from helpers import TEXTS, make_batch, tiny_model
from torch import nn

from siftkit.core.split import PERTURB_POINTS, EmbeddingSplit, UnsupportedModelError, model_inputs
from siftkit.run.models import RANDOM_ARCHS


@pytest.fixture(scope="module", params=RANDOM_ARCHS)
def arch_model(request):
    return request.param, tiny_model(request.param)


@pytest.fixture(scope="module")
def batch():
    b = make_batch(TEXTS, labels=[0, 1, 0])
    mask = b["attention_mask"]
    # the batch really is padded, with three different lengths
    assert len(set(mask.sum(1).tolist())) == 3 and (mask == 0).any()
    return b


def _hooked_modules(split):
    return {"embeddings": split.embeddings, "word_embeddings": split.word_embeddings, "layer_norm": split.layer_norm}


def _assert_no_hooks(split):
    for name, module in _hooked_modules(split).items():
        assert module is not None, name
        assert len(module._forward_hooks) == 0, f"{name} keeps a forward hook"
        assert len(module._forward_pre_hooks) == 0, f"{name} keeps a forward pre-hook"


@pytest.mark.parametrize("at", PERTURB_POINTS)
def test_forward_from_embed_equals_model(arch_model, batch, at):
    arch, model = arch_model
    split = EmbeddingSplit(model)
    _assert_no_hooks(split)
    with torch.no_grad():
        reference = model(**model_inputs(batch)).logits
        z = split.embed(batch, at)
        logits = split.forward_from(z, batch, at)
        cap_logits, cap_z = split.forward_capture(batch, at)
    assert z.ndim == 3 and z.shape[:2] == batch["input_ids"].shape
    assert (logits - reference).abs().max() < 1e-5, f"{arch}/{at}: forward_from(embed(batch)) != model(**batch)"
    assert (cap_logits - reference).abs().max() < 1e-5, f"{arch}/{at}: forward_capture logits differ"
    assert cap_z.shape == z.shape and torch.equal(cap_z, z), f"{arch}/{at}: forward_capture z != embed z"
    _assert_no_hooks(split)
    # plain forwards after the split's calls are the model's own, unchanged
    with torch.no_grad():
        assert torch.equal(model(**model_inputs(batch)).logits, reference)


@pytest.mark.parametrize("at", PERTURB_POINTS)
def test_forward_from_uses_the_given_tensor(arch_model, batch, at):
    """forward_from really replaces the tensor: a changed z changes the logits."""
    arch, model = arch_model
    split = EmbeddingSplit(model)
    with torch.no_grad():
        z = split.embed(batch, at)
        moved = split.forward_from(z + 0.5 * torch.randn_like(z), batch, at)
        reference = model(**model_inputs(batch)).logits
    assert (moved - reference).abs().max() > 1e-6, f"{arch}/{at}: the replacement tensor had no effect"


def test_split_points_are_distinct_tensors():
    """The three points are different tensors of the embedding block (not all the output)."""
    model = tiny_model("bert")
    split = EmbeddingSplit(model)
    batch = make_batch()
    with torch.no_grad():
        w = split.embed(batch, "word_embeddings")
        x = split.embed(batch, "pre_layernorm")
        e = split.embed(batch, "embedding_output")
        expected_w = model.bert.embeddings.word_embeddings(batch["input_ids"])
        expected_e = model.bert.embeddings.LayerNorm(x)
    assert torch.equal(w, expected_w)
    assert torch.allclose(e, expected_e, atol=1e-6)  # eval: dropout is the identity
    assert not torch.allclose(w, x) and not torch.allclose(x, e)


def test_hooks_removed_after_an_error():
    model = tiny_model("bert")
    split = EmbeddingSplit(model)
    batch = make_batch()
    z = split.embed(batch, "embedding_output")
    with pytest.raises(ValueError):
        split.forward_from(z[:, :-1], batch, "embedding_output")
    _assert_no_hooks(split)


@pytest.mark.parametrize("at", PERTURB_POINTS)
def test_forward_from_wrong_shape_raises_value_error(at):
    model = tiny_model("bert")
    split = EmbeddingSplit(model)
    batch = make_batch()
    z = split.embed(batch, at)
    for bad in (z[:, :-1], z[..., :-1], z[:1]):
        with pytest.raises(ValueError, match=at):
            split.forward_from(bad, batch, at)
    _assert_no_hooks(split)


def test_unknown_point_raises_value_error():
    split = EmbeddingSplit(tiny_model("bert"))
    with pytest.raises(ValueError, match="nowhere"):
        split.embed(make_batch(), "nowhere")


class _Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)


def _tiny_gpt2():
    import transformers as tf

    cfg = tf.GPT2Config(vocab_size=100, n_positions=32, n_embd=16, n_layer=1, n_head=2, num_labels=2, pad_token_id=0)
    return tf.GPT2ForSequenceClassification(cfg)


@pytest.mark.parametrize("build, name", [(_Plain, "_Plain"), (_tiny_gpt2, "GPT2ForSequenceClassification")])
def test_unsupported_model_names_its_class(build, name):
    with pytest.raises(UnsupportedModelError, match=name):
        EmbeddingSplit(build())
