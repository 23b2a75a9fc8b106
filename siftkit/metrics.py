"""Classification metrics, from integer predictions and labels (no sklearn dependency)."""

from __future__ import annotations

import math
from typing import Sequence

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


def classification_metrics(prefix: str, preds: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    return {f"{prefix}_accuracy": accuracy(preds, labels), f"{prefix}_mcc": matthews_corrcoef(preds, labels)}


def _check(preds: np.ndarray, labels: np.ndarray) -> None:
    if preds.shape != labels.shape or preds.ndim != 1:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} must be equal-length 1-D")
    if preds.size == 0:
        raise ValueError("cannot compute a metric on zero examples")
