"""Classification metrics, from integer predictions and labels (no sklearn dependency)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    _check(preds, labels)
    return float((preds == labels).mean())


def matthews_corrcoef(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Binary Matthews correlation; 0 when a row or column of the confusion matrix is empty
    (the convention of scikit-learn and GLUE, e.g. a model that predicts one class only)."""
    preds, labels = np.asarray(preds).astype(bool), np.asarray(labels).astype(bool)
    _check(preds, labels)
    tp = float(np.sum(preds & labels))
    tn = float(np.sum(~preds & ~labels))
    fp = float(np.sum(preds & ~labels))
    fn = float(np.sum(~preds & labels))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def multiclass_mcc(preds: Sequence[int], labels: Sequence[int], num_classes: int) -> float:
    """Matthews correlation for K classes (Gorodkin's R_K, as scikit-learn computes it) from the
    K x K confusion matrix; 0 when the predictions or the labels are all one class. For K = 2 it
    equals `matthews_corrcoef`."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    _check(preds, labels)
    confusion = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(confusion, (labels, preds), 1.0)
    true_k, pred_k = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, n = float(np.trace(confusion)), float(confusion.sum())
    cov = correct * n - float(pred_k @ true_k)
    denom = math.sqrt((n * n - float(pred_k @ pred_k)) * (n * n - float(true_k @ true_k)))
    return 0.0 if denom == 0 else cov / denom


def macro_f1(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Unweighted mean of the per-class F1 over the classes that occur in the labels or the
    predictions (scikit-learn's default set); a class never predicted correctly counts 0."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    _check(preds, labels)
    scores = []
    for k in np.union1d(preds, labels):
        tp = float(np.sum((preds == k) & (labels == k)))
        fp = float(np.sum((preds == k) & (labels != k)))
        fn = float(np.sum((preds != k) & (labels == k)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def classification_metrics(
    prefix: str, preds: Sequence[int], labels: Sequence[int], num_classes: int | None = None
) -> dict[str, float]:
    """Accuracy and MCC under `prefix`; with `num_classes` (a shift spec's sets) macro-F1 too,
    and the K-class MCC when there are more than two classes."""
    if num_classes is None:
        return {f"{prefix}_accuracy": accuracy(preds, labels), f"{prefix}_mcc": matthews_corrcoef(preds, labels)}
    mcc = matthews_corrcoef(preds, labels) if num_classes == 2 else multiclass_mcc(preds, labels, num_classes)
    return {
        f"{prefix}_accuracy": accuracy(preds, labels),
        f"{prefix}_mcc": mcc,
        f"{prefix}_macro_f1": macro_f1(preds, labels),
    }


def _check(preds: np.ndarray, labels: np.ndarray) -> None:
    if preds.shape != labels.shape or preds.ndim != 1:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} must be equal-length 1-D")
    if preds.size == 0:
        raise ValueError("cannot compute a metric on zero examples")
