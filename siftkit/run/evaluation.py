"""Tokenization and evaluation: predictions, accuracy/MCC and held-out smoothness per eval set.

An evaluation costs its forwards and as little else as possible:

- each eval set is tokenized once per run: `encoded` keeps a small cache keyed by the
  tokenizer, the dataset's fingerprint and `max_length` (P2's `uci_zero_shot` and
  `uci_test` are the same 2,700 sentences, evaluated after each stage);
- the texts are batched by length, longest first, so a batch carries little padding (on
  P2's UCI sentences 3.0 times fewer token positions than batches in dataset order); the
  predictions are put back in dataset order;
- a batch is padded straight from the cached token ids (no `datasets.map`, no DataLoader,
  no collator built per call) and run under `torch.inference_mode`;
- with several processes, global batch ``b`` goes to process ``b mod N`` and the results
  are gathered once at the end.

The metrics do not change: the attention mask hides padding, so an example's logits do not
depend on its batch beyond float rounding (~1e-8 on MiniLM), and the smoothness probes are
drawn per *example* (`siftkit.core.smoothness`), not per batch.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from siftkit.core.metrics import classification_metrics
from siftkit.core.smoothness import PROBE_SIZES, probe_divergences
from siftkit.core.smoothness import metric_name as smoothness_metric
from siftkit.core.split import EmbeddingSplit, unwrap
from siftkit.run.config import RunConfig

# Texts are cut to max_length * CHARS_PER_TOKEN characters before tokenizing: the tokenizer
# works on the whole string before it truncates, and one 10 MB line took 2.4 GB. No token of
# real text spans that many characters (BERT's WordPiece makes a word of over 100 characters
# one [UNK]), so the max_length tokens kept are the same as without the cut.
CHARS_PER_TOKEN = 256

# Tokenized eval sets kept per tokenizer: a run evaluates at most a few distinct sets.
CACHE_SIZE = 8


def encode_texts(texts, tokenizer, max_length: int, pairs=None) -> dict[str, list]:
    """Token ids (and masks) of `texts` (with their second sentences `pairs`, for a
    sentence-pair task), truncated to `max_length` together, unpadded."""
    limit = max_length * CHARS_PER_TOKEN
    cut = [text[:limit] for text in texts]
    if pairs is None:
        return dict(tokenizer(cut, truncation=True, max_length=max_length))
    return dict(tokenizer(cut, [text[:limit] for text in pairs], truncation=True, max_length=max_length))


def _encode(ds, tokenizer, max_length: int) -> dict[str, list]:
    """`encode_texts` of a set's ``text`` column, with its ``text_pair`` column where it has one
    (a shift spec's sentence pairs)."""
    if "text_pair" in ds.column_names:
        return encode_texts(list(ds["text"]), tokenizer, max_length, list(ds["text_pair"]))
    return encode_texts(list(ds["text"]), tokenizer, max_length)


def tokenize(ds, tokenizer, max_length: int):
    """Tokenized columns + `labels`; padding is dynamic (per batch, in the collator).

    One direct tokenizer call over all texts: cheaper than `datasets.map`, the same ids.
    """
    from datasets import Dataset

    columns = _encode(ds, tokenizer, max_length)
    columns["labels"] = list(ds["label"])
    return Dataset.from_dict(columns)


@dataclass(frozen=True)
class Encoded:
    """An eval set's token ids (one list per tokenizer output), labels and token counts."""

    features: dict[str, list]
    labels: list[int]
    lengths: np.ndarray


# tokenizer -> {(fingerprint, max_length): Encoded}; entries go with their tokenizer.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def encoded(ds, tokenizer, max_length: int) -> Encoded:
    """`ds` tokenized, from the cache when this tokenizer has already seen it.

    The key is the dataset's fingerprint: `datasets` gives every transform's result a new
    one, so two Dataset objects with one fingerprint hold the same rows (the same `select`
    of the same table gets the same fingerprint, which is how P2's two UCI evaluations
    share one entry). A dataset without a fingerprint is tokenized every time.
    """
    fingerprint = getattr(ds, "_fingerprint", None)
    try:
        per_tokenizer = _CACHE.setdefault(tokenizer, OrderedDict())
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        per_tokenizer, fingerprint = OrderedDict(), None
    key = (fingerprint, max_length)
    if fingerprint is not None and key in per_tokenizer:
        per_tokenizer.move_to_end(key)
        return per_tokenizer[key]
    features = _encode(ds, tokenizer, max_length)
    result = Encoded(
        features, [int(y) for y in ds["label"]], np.asarray([len(ids) for ids in features["input_ids"]], dtype=np.int64)
    )
    if fingerprint is not None:
        per_tokenizer[key] = result
        while len(per_tokenizer) > CACHE_SIZE:
            per_tokenizer.popitem(last=False)
    return result


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Example indices in batches of `batch_size`, longest texts first (ties in dataset
    order): batches of similar lengths need little padding, and the largest batch comes
    first, so a batch size too large for memory fails at once."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _pad(enc: Encoded, rows: np.ndarray, tokenizer, device) -> dict[str, torch.Tensor]:
    """The model inputs of examples `rows`, padded by the tokenizer's own rule."""
    batch = tokenizer.pad({k: [v[i] for i in rows] for k, v in enc.features.items()}, return_tensors="pt")
    return {k: t.to(device) for k, t in batch.items()}


@torch.inference_mode()
def predict(model, ds, tokenizer, cfg: RunConfig, accelerator, *, smoothness: bool = False):
    """Predicted and true labels over `ds` in dataset order, gathered from all processes.

    With ``smoothness=True`` also the per-example held-out smoothness under each of
    `siftkit.core.smoothness.PROBE_SIZES`: returns (preds, labels, {size: [values]}).
    """
    enc = encoded(ds, tokenizer, cfg.max_length)
    batches = length_batches(enc.lengths, cfg.per_device_eval_batch_size)
    # The DataLoader this evaluation used to run on drew its base seed from the global torch
    # RNG, once per eval set. Drawing it still keeps what training draws after an evaluation
    # (dropout, perturbation noise) the same, so a seed reproduces the kit's earlier runs.
    torch.empty((), dtype=torch.int64).random_()
    # Forwards go to the unwrapped model: an evaluation needs no gradient sync, and each
    # process runs its own number of batches (a DDP forward may sync buffers collectively).
    core = unwrap(model)
    split = EmbeddingSplit(core) if smoothness else None
    was_training = model.training
    model.eval()
    mine: list[tuple] = []  # (example index, prediction, *smoothness per size)
    try:
        for rows in batches[accelerator.process_index :: accelerator.num_processes]:
            batch = _pad(enc, rows, tokenizer, accelerator.device)
            with accelerator.autocast():
                if split is not None:
                    logits, per_size = probe_divergences(split, batch, example_indices=rows.tolist())
                else:
                    logits, per_size = core(**batch).logits, {}
            columns = [rows.tolist(), logits.argmax(-1).tolist(), *(v.float().tolist() for v in per_size.values())]
            mine.extend(zip(*columns))
    finally:
        model.train(was_training)
    return _in_dataset_order(_gather(mine, accelerator), enc.labels, smoothness)


def _gather(mine: list[tuple], accelerator) -> list[tuple]:
    if accelerator.num_processes == 1:
        return mine
    from accelerate.utils import gather_object

    return gather_object(mine)


def _in_dataset_order(results: list[tuple], labels: list[int], smoothness: bool):
    results = sorted(results)
    if [r[0] for r in results] != list(range(len(labels))):
        raise RuntimeError(f"the evaluation gathered {len(results)} results for {len(labels)} examples")
    preds = [r[1] for r in results]
    if not smoothness:
        return preds, list(labels)
    smooth = {size: [r[2 + k] for r in results] for k, size in enumerate(PROBE_SIZES)}
    return preds, list(labels), smooth


def evaluate(
    model, evals: dict, tokenizer, cfg: RunConfig, accelerator, *, smoothness: bool | None = None
) -> dict[str, float]:
    """Accuracy and MCC per eval set (and per `source` where the set has one, e.g. UCI's
    amazon / imdb / yelp: three out-of-domain targets), plus held-out smoothness when
    `smoothness` is on (None: ``cfg.eval_smoothness``; the probes triple an evaluation's
    forwards, so an evaluation that needs accuracy only passes False)."""
    if smoothness is None:
        smoothness = cfg.eval_smoothness
    # A shift spec's sets also get macro-F1 (and a multi-class MCC beyond two classes); P1's
    # and P2's records keep exactly their binary metrics.
    num_classes = len(cfg.shift["labels"]) if cfg.task == "shift" else None
    metrics: dict[str, float] = {}
    for name, ds in evals.items():
        if smoothness:
            preds, labels, smooth = predict(model, ds, tokenizer, cfg, accelerator, smoothness=True)
        else:
            (preds, labels), smooth = predict(model, ds, tokenizer, cfg, accelerator), {}
        metrics.update(classification_metrics(name, preds, labels, num_classes=num_classes))
        if "source" in ds.column_names:
            sources = list(ds["source"])
            for source in sorted(set(sources)):
                rows = [i for i, s in enumerate(sources) if s == source]
                per = classification_metrics(
                    name, [preds[i] for i in rows], [labels[i] for i in rows], num_classes=num_classes
                )
                metrics.update({f"{k}_{source}": v for k, v in per.items()})
        for size, values in smooth.items():
            metrics[smoothness_metric(name, size)] = sum(values) / len(values)
    return metrics
