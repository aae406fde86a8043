"""Grading an eye from both eyes of its patient (``evaluate.pair_eyes``).

The two eyes of a patient share a grade most of the time (87.6 % on EyePACS), so the
other eye's output is evidence too; the 2015 Kaggle winner fed both eyes' outputs to
a second-level model. Here that model is small and fitted on the *validation* split
only: a least-squares line from (this eye's score, the other eye's score) to the
grade, cut into grades at cut-points tuned for QWK, also on validation. An eye's
score is the regression output, or the expected grade under the 5 probabilities.

It needs a patient-level split: on the lab's per-image split, the other eye of most
test patients is a *training* image, and its output would carry its training label
into the test figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retino.data.splits import patient_of
from retino.errors import DataError
from retino.grading import (NUM_CLASS, broken_rows, predicted_grades, referable_score,
                            tune_cuts)
from retino.report.evaluation import ValidationOutputs, headline_metrics, patient_bootstrap


def eye_scores(outputs: np.ndarray) -> np.ndarray:
    """One number per image on the grade scale: the regression score, or the expected
    grade under the softmax of 5 logits."""
    if outputs.shape[1] == 1:
        return outputs[:, 0].astype(np.float64)
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities @ np.arange(NUM_CLASS, dtype=np.float64)


def partners(names: list[str]) -> np.ndarray:
    """For each image, the index of the other eye of its patient in ``names``, or its own
    index when the other eye is not there."""
    first: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        first.setdefault(patient_of(name), []).append(index)
    partner = np.arange(len(names))
    for eyes in first.values():
        if len(eyes) == 2:
            partner[eyes[0]], partner[eyes[1]] = eyes[1], eyes[0]
    return partner


@dataclass(frozen=True)
class PairModel:
    """grade ~ own * coefficients[0] + other * coefficients[1] + coefficients[2], cut."""

    coefficients: tuple[float, float, float]
    cuts: tuple[float, ...]

    def scores(self, names: list[str], outputs: np.ndarray) -> np.ndarray:
        """Paired scores, one column (a regression-style output)."""
        own = eye_scores(outputs)
        features = np.stack([own, own[partners(names)], np.ones_like(own)], axis=1)
        return (features @ np.asarray(self.coefficients))[:, None]


def fit_pair_model(names: list[str], grades: np.ndarray, outputs: np.ndarray) -> PairModel:
    """Fit the two-eye model on validation outputs (never on test)."""
    broken = broken_rows(outputs)
    if broken:
        raise DataError(
            f"evaluate.pair_eyes: the model's validation outputs are NaN or infinite on "
            f"{broken} of {len(outputs)} images (its train stage "
            "warned): the two-eye model cannot be fitted. Retrain it (longer, or a lower "
            "lr) or set evaluate.pair_eyes: false.")
    own = eye_scores(outputs)
    features = np.stack([own, own[partners(names)], np.ones_like(own)], axis=1)
    coefficients, *_ = np.linalg.lstsq(features, np.asarray(grades, dtype=np.float64),
                                       rcond=None)
    fitted = features @ coefficients
    return PairModel(tuple(float(c) for c in coefficients), tune_cuts(np.asarray(grades), fitted))


def refuse_leaky_split(leakage_percent: float | None) -> None:
    """Stop before any work when test images have their other eye in train, or when the
    image names do not say which images are the two eyes of one patient."""
    if leakage_percent is None:
        raise DataError(
            "evaluate.pair_eyes = true needs the two eyes of each patient, but the image "
            "names of this data source carry no patient (<patient>_<left|right>): set "
            "evaluate.pair_eyes: false")
    if leakage_percent > 0:
        raise DataError(
            f"evaluate.pair_eyes = true needs a patient-level split, but "
            f"{leakage_percent:.1f} % of the test images have the other eye of their "
            "patient in train: its output would come from a training image. Set "
            "data.resplit: true (split by patient) or evaluate.pair_eyes: false")


def paired_eyes_report(validation: ValidationOutputs, actual: np.ndarray,
                       outputs: np.ndarray, names: list[str]) -> dict:
    """The headline and its intervals when each test eye is graded from both eyes, with
    the model fitted on ``validation`` (outputs made as the test ``outputs`` were)."""
    model = fit_pair_model(validation.names, validation.grades, validation.outputs)
    scores = model.scores(names, outputs)
    return {**headline_metrics(actual, predicted_grades(scores, model.cuts),
                               referable_score(scores)),
            "ci95": patient_bootstrap(actual, scores, names, model.cuts),
            "coefficients": list(model.coefficients), "cuts": list(model.cuts)}
