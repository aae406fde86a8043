"""Test-set evaluation of one trained model: its predictions and every metric."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retino.grading import (REFERABLE_GRADE, accuracy_percent, balanced_accuracy_percent,
                            confusion_counts, macro_f1, majority_baseline_percent,
                            per_class_recall_precision, per_grade, quadratic_weighted_kappa,
                            referable_scores, row_normalised)
from retino.train.checkpoints import load_checkpoint, model_from_checkpoint
from retino.train.device import resolve_device
from retino.train.inputs import ImageArray, ToModel, make_loader
from retino.train.loop import predict_logits


@dataclass(frozen=True)
class TestPredictions:
    """A checkpoint's outputs on the test split of a downscaled set."""

    checkpoint: dict[str, Any]
    actual: np.ndarray  # grades, CSV order
    logits: np.ndarray  # float32, one row per image


def predict_test_split(model_file: str | Path, data_folder: str | Path, device_name: str,
                       batch_size: int, workers: int) -> TestPredictions:
    """Load ``model_file`` and run it over the test images of ``data_folder``, normalised
    with the statistics saved in the checkpoint."""
    device = resolve_device(device_name)
    checkpoint = load_checkpoint(model_file)
    model = model_from_checkpoint(checkpoint).to(device)
    loader = make_loader(ImageArray.from_split(data_folder, "test"), batch_size, False,
                         workers, device)
    actual, logits = predict_logits(model, loader, device,
                                    ToModel(checkpoint["mean"], checkpoint["std"], device))
    return TestPredictions(checkpoint, actual, logits)


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
