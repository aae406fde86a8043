"""Test-set evaluation: the lab's ``evaluate`` and the full report per model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from retino import NUM_CLASS
from retino.metrics import (REFERABLE_GRADE, accuracy_percent, balanced_accuracy_percent,
                            confusion_counts, macro_f1, majority_baseline_percent,
                            per_class_recall_precision, per_grade, quadratic_weighted_kappa,
                            referable_scores, row_normalised)
from retino.training import predict_logits


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str,
             num_class: int = NUM_CLASS) -> tuple[np.ndarray, float]:
    """The lab's call: (row-normalised num_class x num_class confusion matrix, accuracy %).

    Rows are the true grades and each sums to 1 (a grade absent from ``loader``
    leaves a row of zeros).
    """
    device = torch.device(device)
    model.to(device)
    actual, logits = predict_logits(model, loader, device)
    predicted = logits.argmax(axis=1)
    counts = confusion_counts(actual, predicted, num_class)
    return row_normalised(counts), accuracy_percent(actual, predicted)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def evaluation_report(actual: np.ndarray, logits: np.ndarray) -> dict:
    """Every test metric of one model, as written to ``metrics/<arch>-<init>.json``."""
    predicted = logits.argmax(axis=1)
    counts = confusion_counts(actual, predicted)
    recall, precision = per_class_recall_precision(counts)
    referable_probability = softmax(logits)[:, REFERABLE_GRADE:].sum(axis=1)
    return {
        "test_images": int(len(actual)),
        "accuracy": accuracy_percent(actual, predicted),
        "majority_baseline_accuracy": majority_baseline_percent(actual),
        "quadratic_weighted_kappa": quadratic_weighted_kappa(actual, predicted),
        "balanced_accuracy": balanced_accuracy_percent(counts),
        "macro_f1": macro_f1(counts),
        "referable": referable_scores(actual, predicted, referable_probability),
        "recall": per_grade(recall),
        "precision": per_grade(precision),
        "confusion_counts": counts.tolist(),
        "confusion_row_normalised": np.round(row_normalised(counts), 4).tolist(),
    }


def prediction_rows(actual: np.ndarray, predicted: np.ndarray) -> list[dict[str, str]]:
    """Per-image rows for DVC's confusion template (labels as strings)."""
    return [{"actual": str(int(a)), "predicted": str(int(p))} for a, p in zip(actual, predicted)]
