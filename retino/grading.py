"""The five DR grades and how a grading is scored, in plain numpy.

Grades are integers 0..4 (``GRADES`` names them). "Referable" DR is grade >= 2
(moderate or worse), the operating point of the screening literature (Gulshan et
al., JAMA 2016). compute-stats (the majority baseline), training (validation
kappa) and the report all score with these functions, so they sit below all three.

One unit per kind of quantity, everywhere in retino's outputs: shares of images
(accuracy, balanced accuracy, recall, precision, sensitivity, specificity,
leakage) are in %; kappa, F1 and AUC are coefficients (0..1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

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
    """Recall (row-wise) and precision (column-wise), as fractions; 0 where undefined."""
    hits = np.diag(counts).astype(float)
    rows, cols = counts.sum(axis=1), counts.sum(axis=0)
    recall = np.divide(hits, rows, out=np.zeros(len(hits)), where=rows > 0)
    precision = np.divide(hits, cols, out=np.zeros(len(hits)), where=cols > 0)
    return recall, precision


def recall_percent(counts: np.ndarray) -> np.ndarray:
    """Recall of each grade in %, NaN (not measured, JSON null) for a grade with no
    image in the scored set: 0 % would say that its images were all missed."""
    hits, rows = np.diag(counts).astype(float), counts.sum(axis=1)
    return 100.0 * np.divide(hits, rows, out=np.full(len(hits), np.nan), where=rows > 0)


def macro_f1(counts: np.ndarray) -> float:
    """Mean F1 (0..1) over the grades that occur, as true or predicted grade."""
    recall, precision = per_class_recall_precision(counts)
    total = recall + precision
    f1 = np.divide(2 * recall * precision, total, out=np.zeros(len(total)), where=total > 0)
    occurs = (counts.sum(axis=1) > 0) | (counts.sum(axis=0) > 0)
    return float(f1[occurs].mean())


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


class Referable(NamedTuple):
    """Referable DR (grade >= 2) as a screening test; NaN where undefined (no referable,
    or no non-referable, case)."""

    sensitivity: float  # %
    specificity: float  # %
    auc: float  # ROC AUC of the referable score, 0..1


def referable_scores(actual: np.ndarray, predicted: np.ndarray,
                     referable_score: np.ndarray) -> Referable:
    """Sensitivity/specificity of predicted grade >= 2, and the ROC AUC of a score that
    ranks images by how referable they look (e.g. P(grade >= 2))."""
    truth = np.asarray(actual) >= REFERABLE_GRADE
    call = np.asarray(predicted) >= REFERABLE_GRADE
    positives, negatives = truth.sum(), (~truth).sum()
    return Referable(
        sensitivity=float(100.0 * (call & truth).sum() / positives) if positives else float("nan"),
        specificity=float(100.0 * (~call & ~truth).sum() / negatives) if negatives
        else float("nan"),
        auc=roc_auc(truth, referable_score))


def majority_baseline_percent(actual: np.ndarray, num_class: int = NUM_CLASS) -> float:
    """Accuracy of always predicting the most common grade of ``actual``."""
    counts = np.bincount(np.asarray(actual), minlength=num_class)
    return float(100.0 * counts.max() / counts.sum())


def referable_probability(logits: np.ndarray) -> np.ndarray:
    """P(grade >= 2) from 5-way logits: the softmax mass of the referable grades."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted[:, REFERABLE_GRADE:].sum(axis=1) / shifted.sum(axis=1)).astype(np.float64)


# Screening operating points, as Gulshan et al. (JAMA 2016) report two: one chosen for
# high sensitivity, one for high specificity. Each threshold is chosen on validation.
SENSITIVITY_TARGET = 97.5  # %: the high-sensitivity point catches at least this share
SPECIFICITY_TARGET = 98.0  # %: the high-specificity point clears at least this share


class OperatingPoint(NamedTuple):
    """Call an image referable when its referable score is >= ``threshold``."""

    threshold: float
    sensitivity: float  # % on the set the threshold was chosen on
    specificity: float  # %


def at_threshold(is_referable: np.ndarray, score: np.ndarray, threshold: float
                 ) -> tuple[float, float]:
    """(sensitivity %, specificity %) of calling ``score >= threshold`` referable."""
    truth, call = np.asarray(is_referable, dtype=bool), np.asarray(score) >= threshold
    sensitivity = 100.0 * (call & truth).sum() / truth.sum() if truth.any() else float("nan")
    specificity = 100.0 * (~call & ~truth).sum() / (~truth).sum() if (~truth).any() \
        else float("nan")
    return float(sensitivity), float(specificity)


def operating_points(is_referable: np.ndarray, score: np.ndarray) -> dict[str, OperatingPoint]:
    """The high-sensitivity point (the highest threshold that still catches
    ``SENSITIVITY_TARGET`` % of referable images) and the high-specificity point (the
    lowest threshold that clears ``SPECIFICITY_TARGET`` % of the others); empty when
    ``is_referable`` holds only one class."""
    truth, score = np.asarray(is_referable, dtype=bool), np.asarray(score, dtype=np.float64)
    if truth.all() or not truth.any():
        return {}
    candidates = np.unique(score)
    sensitivities = np.array([at_threshold(truth, score, t)[0] for t in candidates])
    specificities = np.array([at_threshold(truth, score, t)[1] for t in candidates])
    high_sensitivity = candidates[sensitivities >= SENSITIVITY_TARGET].max()
    reaching = candidates[specificities >= SPECIFICITY_TARGET]
    # none reaches it: a threshold above every score calls nothing referable (100 %
    # specificity), whatever the scale of the scores (a regression score may pass 2)
    high_specificity = reaching.min() if reaching.size else np.nextafter(candidates.max(), np.inf)
    return {name: OperatingPoint(float(t), *at_threshold(truth, score, t))
            for name, t in (("high_sensitivity", high_sensitivity),
                            ("high_specificity", high_specificity))}


# --- model outputs -> grades ---------------------------------------------------------
# A classification head gives 5 logits per image; a regression head one score on the
# grade scale, cut into grades at four cut-points (tuned on validation after training).
HEAD_OUTPUTS = {"classification": NUM_CLASS, "regression": 1}
DEFAULT_CUTS = (0.5, 1.5, 2.5, 3.5)
CUT_CANDIDATES = 400  # score quantiles tried for each cut-point


def predicted_grades(outputs: np.ndarray, cuts: tuple[float, ...] | None = None) -> np.ndarray:
    """The grade of each row of ``outputs``: the highest logit, or the regression score
    cut at ``cuts`` (default: halfway between grades)."""
    if outputs.shape[1] == 1:
        return np.searchsorted(np.asarray(cuts or DEFAULT_CUTS), outputs[:, 0], side="right")
    return outputs.argmax(axis=1)


def broken_rows(outputs: np.ndarray) -> int:
    """How many images' outputs hold a NaN or an infinity (a model broken in eval mode)."""
    return int((~np.isfinite(outputs).all(axis=1)).sum())


def referable_score(outputs: np.ndarray) -> np.ndarray:
    """What ranks images by how referable they look: P(grade >= 2), or the regression
    score itself."""
    return outputs[:, 0].astype(np.float64) if outputs.shape[1] == 1 \
        else referable_probability(outputs)


def tune_cuts(actual: np.ndarray, scores: np.ndarray, rounds: int = 4) -> tuple[float, ...]:
    """Four increasing cut-points that maximise the QWK of ``scores`` against ``actual``:
    coordinate search from halfway between grades, each cut in turn over the midpoints
    between (at most ``CUT_CANDIDATES`` quantiles of) the scores that keep the order.
    Deterministic."""
    cuts = list(DEFAULT_CUTS)
    candidates = np.unique(np.quantile(scores, np.linspace(0, 1, CUT_CANDIDATES)))
    midpoints = (candidates[:-1] + candidates[1:]) / 2 if len(candidates) > 1 else candidates

    def kappa(trial: list[float]) -> float:
        return quadratic_weighted_kappa(actual, np.searchsorted(trial, scores, side="right"))

    best = kappa(cuts)
    for _ in range(rounds):
        improved = False
        for index in range(len(cuts)):
            low = cuts[index - 1] if index else -np.inf
            high = cuts[index + 1] if index + 1 < len(cuts) else np.inf
            for value in midpoints[(midpoints > low) & (midpoints < high)]:
                trial = cuts[:index] + [float(value)] + cuts[index + 1:]
                score = kappa(trial)
                if score > best + 1e-12:
                    best, cuts, improved = score, trial, True
        if not improved:
            break
    return tuple(float(c) for c in cuts)


class Decisions(NamedTuple):
    """What a model's outputs on validation decide for every later set: the regression
    head's cut-points (None for 5 logits, or for broken outputs) and the referable
    operating points (empty when there are none)."""

    cuts: tuple[float, ...] | None
    operating_points: dict[str, OperatingPoint]


def fit_decisions(actual: np.ndarray, outputs: np.ndarray) -> Decisions:
    """The cut-points (regression head: tuned for QWK) and the referable operating points
    of ``outputs`` on the validation split; none for outputs with broken rows."""
    if broken_rows(outputs):
        return Decisions(None, {})
    cuts = tune_cuts(actual, outputs[:, 0]) if outputs.shape[1] == 1 else None
    return Decisions(cuts, operating_points(actual >= REFERABLE_GRADE, referable_score(outputs)))


# --- a model that learned nothing ----------------------------------------------------
ONE_GRADE_SHARE = 95.0  # % of predictions in one grade: (almost) a constant guess


class LearnedNothing(NamedTuple):
    """A model that grades no better than chance: its QWK figure judged, and what its
    predictions looked like (the most predicted grade and its share)."""

    grade: int
    share: float  # % of the predictions judged
    qwk_low: float | None  # the lower end of the QWK's interval, or the QWK itself


def learned_nothing(predicted: np.ndarray, qwk_low: float | None) -> LearnedNothing | None:
    """The verdict when the model does no better than chance: its QWK is not above 0
    (``qwk_low``: the lower end of its 95 % interval, or the figure itself where there
    is no interval; NaN, undefined, counts as not above 0). Never for a model whose QWK
    interval lies above 0, however its ``predicted`` grades are spread: a set that is
    97 % grade 0 is graded well by a model that mostly says 0. None when it learned."""
    if not _flat_kappa(qwk_low):
        return None
    counts = np.bincount(np.asarray(predicted, dtype=np.int64), minlength=NUM_CLASS)
    grade = int(counts.argmax())
    share = float(100.0 * counts[grade] / max(counts.sum(), 1))
    return LearnedNothing(grade, share, qwk_low)


def _flat_kappa(qwk_low: float | None) -> bool:
    return qwk_low is not None and not qwk_low > 0  # NaN: not above 0 either


WHAT_USUALLY_HELPS = ("train.head: regression, a higher train.<arch>.lr or more epochs")


def what_usually_helps(name: str, weighted_loss: bool = False) -> str:
    """The usual remedies for run ``name`` (``<arch>-<init>``): ImageNet weights for a
    scratch run; for a pretrained one, first that its weights are ImageNet's; the
    weighted loss where it was off."""
    weights = ("make sure its weights are ImageNet's (stand-in or wrong weights files "
               "learn nothing)" if name.endswith("-pretrained")
               else "ImageNet weights (the pretrained runs)")
    weighting = "" if weighted_loss else "train.weighted_loss: true, "
    return f"{weights}, {weighting}{WHAT_USUALLY_HELPS}"


def learned_nothing_text(name: str, verdict: LearnedNothing,
                         predictions: str = "validation predictions",
                         weighted_loss: bool = False) -> str:
    """The verdict in words, saying what was observed (one grade almost always, or no
    agreement beyond chance with predictions spread over the grades), and what usually
    helps (``weighted_loss``: whether the run already used it). ``predictions``: which
    predictions the share counts."""
    kappa = ("undefined" if verdict.qwk_low is None or math.isnan(verdict.qwk_low)
             else f"{verdict.qwk_low:.3f}")
    observed = (f"its QWK is not above 0 ({kappa})")
    if verdict.share >= ONE_GRADE_SHARE:
        return (f"{name} learned nothing: it predicts grade {verdict.grade} "
                f"({GRADES[verdict.grade]}) almost always ({verdict.share:.1f} % of its "
                f"{predictions}) and {observed}. Its accuracy is then the share of that "
                f"grade, not skill. What usually helps: {what_usually_helps(name, weighted_loss)}.")
    return (f"{name} learned nothing: its grades agree with the true ones no better than "
            f"chance, {observed}, though its {predictions} spread over the grades (the "
            f"most common, grade {verdict.grade}, {verdict.share:.1f} %). What usually "
            f"helps: {what_usually_helps(name, weighted_loss)}.")
