"""Evaluation: length-sorted batches and cached tokenization give the predictions and metrics of
a straightforward loop in dataset order; smoothness probes are per example."""

import contextlib

import numpy as np
import pytest
import torch
from datasets import Dataset
from helpers import TEXTS, real_examples, tiny_model, tokenizer

import siftkit.run.evaluation as evaluation
from siftkit.core.metrics import classification_metrics
from siftkit.core.smoothness import PROBE_SIZES, metric_name, probe_divergences
from siftkit.core.split import EmbeddingSplit
from siftkit.run.config import RunConfig
from siftkit.run.evaluation import encoded, evaluate, length_batches, predict
from siftkit.run.models import load_model
from siftkit.run.protocols import build_stages
from siftkit.run.training import _make_accelerator


def _cfg(smoke_params, **kw):
    return RunConfig.from_yaml(smoke_params, cpu=True, **kw)


@torch.no_grad()
def _balanced(model, tokenizer, ds, max_length):
    """A fresh head predicts one class for every text: shift its bias so that half of `ds`
    (an even number of texts) falls on each side, with no text near the boundary."""
    batch = tokenizer(list(ds["text"]), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    logits = model.eval()(**batch).logits
    margin = (logits[:, 1] - logits[:, 0]).sort().values
    middle = len(margin) // 2
    model.classifier.bias[1] -= float(margin[middle - 1] + margin[middle]) / 2
    return model


def _texts(data_dir, n):
    """Real UCI sentences of mixed lengths, with their labels, as an eval set."""
    texts, labels = real_examples("uci_sentiment", n, data_dir)
    return Dataset.from_dict({"text": texts, "label": labels})


@torch.no_grad()
def reference(model, ds, tokenizer, max_length, batch_size):
    """The straightforward evaluation: batches in dataset order, the model called directly;
    each example's smoothness computed alone (no padding at all)."""
    model.eval()
    texts, preds = list(ds["text"]), []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        preds.extend(model(**batch).logits.argmax(-1).tolist())
    split, smooth = EmbeddingSplit(model), {size: [] for size in PROBE_SIZES}
    for i, text in enumerate(texts):
        one = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
        _, per_size = probe_divergences(split, one, example_indices=[i])
        for size in PROBE_SIZES:
            smooth[size].append(float(per_size[size][0]))
    return preds, smooth


def _check_against_reference(model, tokenizer, ds, cfg):
    accelerator = _make_accelerator(cfg)
    want_preds, want_smooth = reference(model, ds, tokenizer, cfg.max_length, cfg.per_device_eval_batch_size)
    preds, labels, smooth = predict(model, ds, tokenizer, cfg, accelerator, smoothness=True)
    assert preds == want_preds
    assert labels == list(ds["label"])
    assert len(set(preds)) == 2  # both classes predicted: the comparison is not trivial
    for size in PROBE_SIZES:
        np.testing.assert_allclose(smooth[size], want_smooth[size], rtol=1e-4, atol=1e-10)
    assert predict(model, ds, tokenizer, cfg, accelerator) == (want_preds, list(ds["label"]))
    metrics = evaluate(model, {"uci": ds}, tokenizer, cfg, accelerator)
    assert {k: metrics[k] for k in ("uci_accuracy", "uci_mcc")} == classification_metrics(
        "uci", want_preds, list(ds["label"])
    )
    return smooth


@pytest.mark.slow
def test_predictions_match_the_reference_on_a_tiny_model(smoke_params, data_dir):
    ds = _texts(data_dir, 40)
    model = _balanced(tiny_model("bert", seed=3), tokenizer(), ds, 32)
    lengths = encoded(ds, tokenizer(), 32).lengths
    assert lengths.max() > 2 * lengths.min()  # batches in dataset order would carry padding
    smooth = _check_against_reference(model, tokenizer(), ds, _cfg(smoke_params, per_device_eval_batch_size=8))
    # another batch size puts every example in another batch: the same predictions and probes
    cfg3 = _cfg(smoke_params, per_device_eval_batch_size=3)
    _, _, smooth3 = predict(model, ds, tokenizer(), cfg3, _make_accelerator(cfg3), smoothness=True)
    for size in PROBE_SIZES:
        np.testing.assert_allclose(smooth3[size], smooth[size], rtol=1e-4, atol=1e-10)


@pytest.mark.slow
def test_predictions_match_the_reference_on_real_minilm_texts(smoke_params, data_dir):
    model, tok = load_model(None, num_labels=2)
    ds = _texts(data_dir, 24)
    _balanced(model, tok, ds, 64)
    _check_against_reference(
        model, tok, ds, _cfg(smoke_params, model_name=None, max_length=64, per_device_eval_batch_size=8)
    )


def test_evaluation_restores_train_mode_and_training_goes_on(smoke_params, data_dir):
    model = tiny_model("bert", train=True)
    cfg = _cfg(smoke_params)
    evaluate(model, {"uci": _texts(data_dir, 8)}, tokenizer(), cfg, _make_accelerator(cfg))
    assert model.training
    batch = tokenizer()(list(TEXTS), padding=True, return_tensors="pt")
    model(**batch).logits.sum().backward()  # nothing made under inference_mode leaked into the model
    assert model.classifier.weight.grad is not None


def test_smoothness_keyword_overrides_the_config(smoke_params, data_dir):
    model = tiny_model("bert")
    cfg = _cfg(smoke_params)
    assert cfg.eval_smoothness
    accelerator, evals = _make_accelerator(cfg), {"uci": _texts(data_dir, 8)}
    with_probes = evaluate(model, evals, tokenizer(), cfg, accelerator)
    without = evaluate(model, evals, tokenizer(), cfg, accelerator, smoothness=False)
    assert {metric_name("uci", s) for s in PROBE_SIZES} <= set(with_probes)
    assert not any("smoothness" in k for k in without)
    assert without == {k: v for k, v in with_probes.items() if "smoothness" not in k}
    off = cfg.replace(eval_smoothness=False)
    assert evaluate(model, evals, tokenizer(), off, accelerator) == without
    assert evaluate(model, evals, tokenizer(), off, accelerator, smoothness=True) == with_probes


def test_length_batches_cover_every_example_once_longest_first():
    lengths = np.array([3, 9, 5, 9, 1, 5, 7])
    batches = length_batches(lengths, 3)
    assert [b.tolist() for b in batches] == [[1, 3, 6], [2, 5, 0], [4]]  # ties in dataset order
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))


def test_tokenization_is_cached_per_dataset_fingerprint_and_max_length(monkeypatch):
    calls = []
    original = evaluation.encode_texts

    def counting(texts, tok, max_length):
        calls.append((len(texts), max_length))
        return original(texts, tok, max_length)

    monkeypatch.setattr(evaluation, "encode_texts", counting)
    ds = Dataset.from_dict({"text": list(TEXTS) * 2, "label": [0, 1] * 3})
    first = encoded(ds, tokenizer(), 32)
    assert encoded(ds, tokenizer(), 32) is first
    # the same selection of the same rows is the same fingerprint: one entry
    assert encoded(ds.select([0, 2]), tokenizer(), 32) is encoded(ds.select([0, 2]), tokenizer(), 32)
    assert encoded(ds, tokenizer(), 8) is not first  # another max_length: tokenized again
    assert calls == [(6, 32), (2, 32), (6, 8)]
    assert first.features["input_ids"] == tokenizer()(list(TEXTS) * 2, truncation=True, max_length=32)["input_ids"]
    assert first.labels == [0, 1] * 3 and first.lengths.tolist() == [len(i) for i in first.features["input_ids"]]


@pytest.mark.slow
def test_p2_evaluates_one_tokenization_of_the_uci_sentences(smoke_params):
    """uci_zero_shot (after stage 1) and uci_test (after stage 2) are the same sentences."""
    for cap in (None, 16):
        stages = build_stages(_cfg(smoke_params, task="twitter_to_uci", max_eval_samples=cap))
        zero_shot, test = stages[0].evals["uci_zero_shot"], stages[1].evals["uci_test"]
        assert zero_shot._fingerprint == test._fingerprint
        assert encoded(zero_shot, tokenizer(), 32) is encoded(test, tokenizer(), 32)


class _Process:
    """What predict asks of an accelerator, for process `index` of `n` (no process group)."""

    def __init__(self, index, n):
        self.process_index, self.num_processes, self.device = index, n, torch.device("cpu")

    def autocast(self):
        return contextlib.nullcontext()


def test_processes_share_uneven_batches_and_results_come_back_in_order(smoke_params, data_dir, monkeypatch):
    """7 batches over 3 processes (3, 2 and 2 of them): the gathered predictions and probes are those of
    one process, in dataset order."""
    model, ds = tiny_model("bert"), _texts(data_dir, 26)
    cfg = _cfg(smoke_params, per_device_eval_batch_size=4)
    alone = predict(model, ds, tokenizer(), cfg, _Process(0, 1), smoothness=True)
    shares = []

    class Stop(Exception):
        pass

    def keep_share(mine, _accelerator):
        shares.append(mine)
        raise Stop  # a process's own share alone is not a whole result

    monkeypatch.setattr(evaluation, "_gather", keep_share)
    for rank in range(3):
        with pytest.raises(Stop):
            predict(model, ds, tokenizer(), cfg, _Process(rank, 3), smoothness=True)
    assert [len(s) for s in shares] == [10, 8, 8]  # batches 0,3,6 (the last has 2 texts) / 1,4 / 2,5
    monkeypatch.setattr(evaluation, "_gather", lambda mine, _acc: [r for s in shares for r in s])
    assert predict(model, ds, tokenizer(), cfg, _Process(0, 3), smoothness=True) == alone


def test_an_evaluation_draws_once_from_the_global_rng(smoke_params, data_dir):
    """As the DataLoader it used to run on did: training after it draws what it drew before."""
    model, ds = tiny_model("bert"), _texts(data_dir, 8)
    cfg = _cfg(smoke_params)
    for smoothness in (False, True):
        torch.manual_seed(5)
        torch.empty((), dtype=torch.int64).random_()
        want = torch.get_rng_state()
        torch.manual_seed(5)
        predict(model, ds, tokenizer(), cfg, _make_accelerator(cfg), smoothness=smoothness)
        assert torch.equal(torch.get_rng_state(), want)
