"""The five DR grades and how a grading is scored, in plain numpy.

Grades are integers 0..4 (``GRADES`` names them). "Referable" DR is grade >= 2
(moderate or worse), the operating point of the screening literature (Gulshan et
al., JAMA 2016). compute-stats (the majority baseline), training (validation
kappa) and the report all score with these functions, so they sit below all three.
"""

from __future__ import annotations

import numpy as np

GRADES = ("none", "mild", "moderate", "severe", "proliferative")
NUM_CLASS = len(GRADES)
REFERABLE_GRADE = 2


def per_grade(values: np.ndarray, cast: type = float) -> dict:
    """``{"0-none": ..., "1-mild": ...}``: one value per grade, keyed for JSON and DVC."""
    return {f"{c}-{GRADES[c]}": cast(values[c]) for c in range(NUM_CLASS)}


def confusion_counts(actual: np.ndarray, predicted: np.ndarray,
                     num_class: int = NUM_CLASS) -> np.ndarray:
    """counts[i, j] = images of grade i predicted as j."""
    counts = np.zeros((num_class, num_class), dtype=np.int64)
    np.add.at(counts, (np.asarray(actual), np.asarray(predicted)), 1)
    return counts


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total (rows of absent grades stay 0), as the lab plots it."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def accuracy_percent(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(100.0 * np.mean(np.asarray(actual) == np.asarray(predicted)))


def quadratic_weighted_kappa(actual: np.ndarray, predicted: np.ndarray,
                             num_class: int = NUM_CLASS) -> float:
    """Cohen's kappa with quadratic weights (Kaggle 2015's metric); 0 for a constant guess."""
    observed = confusion_counts(actual, predicted, num_class).astype(float)
    grades = np.arange(num_class)
    weights = (grades[:, None] - grades[None, :]) ** 2 / (num_class - 1) ** 2
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    denominator = (weights * expected).sum()
    if denominator == 0:
        return 0.0
    return float(1.0 - (weights * observed).sum() / denominator)


def per_class_recall_precision(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall (row-wise) and precision (column-wise); 0 where undefined."""
    hits = np.diag(counts).astype(float)
    rows, cols = counts.sum(axis=1), counts.sum(axis=0)
    recall = np.divide(hits, rows, out=np.zeros(len(hits)), where=rows > 0)
    precision = np.divide(hits, cols, out=np.zeros(len(hits)), where=cols > 0)
    return recall, precision


def macro_f1(counts: np.ndarray) -> float:
    recall, precision = per_class_recall_precision(counts)
    total = recall + precision
    f1 = np.divide(2 * recall * precision, total, out=np.zeros(len(total)), where=total > 0)
    return float(f1.mean())


def balanced_accuracy_percent(counts: np.ndarray) -> float:
    """Mean recall over the grades present in ``actual``."""
    recall, _ = per_class_recall_precision(counts)
    present = counts.sum(axis=1) > 0
    return float(100.0 * recall[present].mean())


def roc_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN if one class."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos, n_neg = is_positive.sum(), (~is_positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = np.asarray(score)[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        ranks[order[start:start + count]] = start + (count + 1) / 2
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def referable_scores(actual: np.ndarray, predicted: np.ndarray,
                     referable_probability: np.ndarray) -> dict:
    """Sensitivity/specificity of predicted grade >= 2, and ROC AUC of P(grade >= 2)."""
    truth = np.asarray(actual) >= REFERABLE_GRADE
    call = np.asarray(predicted) >= REFERABLE_GRADE
    positives, negatives = truth.sum(), (~truth).sum()
    return {
        "sensitivity": float((call & truth).sum() / positives) if positives else float("nan"),
        "specificity": float((~call & ~truth).sum() / negatives) if negatives else float("nan"),
        "roc_auc": roc_auc(truth, referable_probability),
    }


def majority_baseline_percent(actual: np.ndarray, num_class: int = NUM_CLASS) -> float:
    """Accuracy of always predicting the most common grade of ``actual``."""
    counts = np.bincount(np.asarray(actual), minlength=num_class)
    return float(100.0 * counts.max() / counts.sum())
