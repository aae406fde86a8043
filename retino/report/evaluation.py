"""Test-set evaluation of one trained model: its predictions and every metric."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from retino.data.layout import read_layout
from retino.data.splits import patient_leakage, patient_of, seen_in_training
from retino.errors import DataError
from retino.grading import (REFERABLE_GRADE, OperatingPoint, accuracy_percent, broken_rows,
                            at_threshold, balanced_accuracy_percent, confusion_counts,
                            fit_decisions, learned_nothing, macro_f1, majority_baseline_percent,
                            per_class_recall_precision, per_grade, predicted_grades,
                            quadratic_weighted_kappa, recall_percent, referable_score,
                            referable_scores, row_normalised)
from retino.train.checkpoints import load_checkpoint, model_from_checkpoint
from retino.train.device import resolve_device
from retino.train.inputs import ImageArray, ToModel, make_loader, validation_pool
from retino.train.loop import predict_logits


@dataclass(frozen=True)
class SplitPredictions:
    """A checkpoint's model and its outputs on the test split of a downscaled set."""

    checkpoint: dict[str, Any]
    model: nn.Module  # eval mode, on the device
    to_model: ToModel  # the checkpoint's normalisation, on the device
    images: ImageArray  # the test images, CSV order
    actual: np.ndarray  # their grades
    logits: np.ndarray  # float32, one row per image


FLIPS = ((False, False), (True, False), (False, True), (True, True))


def predict_test_split(model_file: str | Path, data_folder: str | Path, device_name: str,
                       batch_size: int, workers: int, tta: str = "none",
                       keep: np.ndarray | None = None) -> SplitPredictions:
    """Load ``model_file`` and run it over the test images of ``data_folder`` (those at
    the indices ``keep``, when given), normalised with the statistics saved in the
    checkpoint; with ``tta="flips"``, the outputs are averaged over the four flips of
    each image."""
    device = resolve_device(device_name)
    checkpoint = load_checkpoint(model_file)
    model = model_from_checkpoint(checkpoint).to(device).eval()
    images = ImageArray.from_split(data_folder, "test")
    if keep is not None:
        images = images.subset(keep)
    to_model = ToModel(checkpoint["mean"], checkpoint["std"], device)
    actual, outputs = predict_with_tta(model, make_loader(images, batch_size, False, workers,
                                                          device), device, to_model, tta)
    return SplitPredictions(checkpoint, model, to_model, images, actual, outputs)


@dataclass(frozen=True)
class ValidationOutputs:
    """A model's outputs on its validation split, made as its test outputs are."""

    names: list[str]
    grades: np.ndarray
    outputs: np.ndarray


def predict_validation_split(test: SplitPredictions, model_file: str | Path,
                             data_folder: str | Path, batch_size: int, workers: int,
                             tta: str = "none") -> ValidationOutputs:
    """The outputs on the validation images the train stage held out (named in the model
    file), made the way ``test``'s were: the single-pass outputs train stored, or, with
    ``tta="flips"``, flip-averaged outputs computed here from the train split's arrays.
    Whatever is applied to test outputs (cut-points, operating points, the two-eye
    model) is fitted on these."""
    stored = test.checkpoint.get("validation")
    if stored is None:
        raise DataError(f"{model_file}: holds no validation outputs (a model file of an "
                        "older retino); train it again: "
                        f"dvc repro -f train@{Path(model_file).stem}")
    if tta == "none":
        return ValidationOutputs(list(stored["names"]), np.asarray(stored["grades"]),
                                 stored["outputs"].numpy())
    images = held_out_images(validation_pool(data_folder), stored["names"], model_file,
                             data_folder)
    device = next(test.model.parameters()).device
    actual, outputs = predict_with_tta(test.model, make_loader(images, batch_size, False,
                                                               workers, device),
                                       device, test.to_model, tta)
    return ValidationOutputs(list(images.names), actual, outputs)


def held_out_images(pool: ImageArray, names: list[str], model_file: str | Path,
                    data_folder: str | Path) -> ImageArray:
    """The images of ``pool`` (``validation_pool``) called ``names``, in that order."""
    rows = {name: index for index, name in enumerate(pool.names)}
    missing = [name for name in names if name not in rows]
    if missing:
        raise DataError(f"{model_file}: {len(missing)} of its validation images (first: "
                        f"{missing[0]}) are not in {data_folder}: the model was trained on "
                        "other data; train it again: "
                        f"dvc repro -f train@{Path(model_file).stem}")
    return pool.subset([rows[name] for name in names])


def predict_with_tta(model: nn.Module, loader: DataLoader, device: torch.device,
                     to_model: ToModel, tta: str) -> tuple[np.ndarray, np.ndarray]:
    """(grades, outputs) over ``loader``; with ``tta="flips"``, the outputs averaged over
    the four flips of each image (``evaluate.tta``)."""
    passes = [predict_logits(model, loader, device,
                             lambda batch, h=h, v=v: to_model.flipped(batch, [h] * len(batch),
                                                                      [v] * len(batch)))
              for h, v in (FLIPS if tta == "flips" else FLIPS[:1])]
    return passes[0][0], average_outputs([outputs for _, outputs in passes])


def average_outputs(passes: list[np.ndarray]) -> np.ndarray:
    """The mean of several passes' outputs: of the probabilities for 5 logits (returned
    as log-probabilities, so that argmax and softmax still apply), of the score for a
    regression head.

    The mean is taken in log space (log-sum-exp of the passes' log-softmax), so that a
    probability too small for floating point (logits ``[120, 0, ...]``) gives a large
    negative log-probability, not ``-inf``: finite inputs give finite outputs, and only
    a pass that was itself NaN or infinite makes a row broken (``broken_rows``).
    """
    if len(passes) == 1:
        return passes[0]
    if passes[0].shape[1] == 1:
        return np.mean(passes, axis=0)
    stacked = np.asarray(passes, dtype=np.float64)  # passes x images x grades
    shifted = stacked - stacked.max(axis=2, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    peak = log_softmax.max(axis=0)
    log_mean = peak + np.log(np.exp(log_softmax - peak).mean(axis=0))
    return log_mean.astype(np.float32)


def broken_outputs_warning(model_file: str | Path, logits: np.ndarray, images: str
                           ) -> str | None:
    """In words (rich markup), when the model's outputs on ``images`` ("test images")
    hold NaN or infinite rows; None when they do not."""
    broken = broken_rows(logits)
    if not broken:
        return None
    return (f"[bold red]warning:[/] {model_file} gives NaN or infinite outputs on {broken} of "
            f"{len(logits)} {images}: its figures are those of a broken model (see its "
            "train stage's warning)")


# The headline of every model, in the order reports show it (short names, one each:
# the same keys in metrics/<run>.json, metrics/compare.json and the summary table).
HEADLINE = ("acc", "qwk", "bacc", "ref_sens", "ref_spec", "ref_auc")


def headline_metrics(actual: np.ndarray, predicted: np.ndarray,
                     referable_score: np.ndarray) -> dict[str, float]:
    """The ``HEADLINE`` figures of one set of predictions (NaN where undefined)."""
    counts = confusion_counts(actual, predicted)
    referable = referable_scores(actual, predicted, referable_score)
    return {"acc": accuracy_percent(actual, predicted),
            "qwk": quadratic_weighted_kappa(actual, predicted),
            "bacc": balanced_accuracy_percent(counts),
            "ref_sens": referable.sensitivity, "ref_spec": referable.specificity,
            "ref_auc": referable.auc}


def evaluation_report(actual: np.ndarray, outputs: np.ndarray, cuts: tuple | None = None
                      ) -> dict:
    """Every test metric of one model, as written to ``metrics/<arch>-<init>.json``:
    rates in %, kappa/F1/AUC as 0..1 coefficients, NaN where undefined. ``outputs`` are
    5 logits or 1 regression score per image (cut into grades at ``cuts``)."""
    predicted = predicted_grades(outputs, cuts)
    counts = confusion_counts(actual, predicted)
    _, precision = per_class_recall_precision(counts)
    return {
        **headline_metrics(actual, predicted, referable_score(outputs)),
        "macro_f1": macro_f1(counts),
        "baseline_acc": majority_baseline_percent(actual),
        "test_images": int(len(actual)),
        "recall": per_grade(recall_percent(counts)),  # null: no image of the grade
        "precision": per_grade(100.0 * precision),
        "confusion_counts": counts.tolist(),
        "confusion_row_normalised": np.round(row_normalised(counts), 4).tolist(),
    }


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 2016  # fixed: reruns give the same intervals


def patient_resamples(names: list[str], resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Image indices of each bootstrap resample: as many patients as there are, drawn
    with replacement, each bringing all its images (both eyes)."""
    eyes: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        eyes.setdefault(patient_of(name), []).append(index)
    groups = list(eyes.values())
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        drawn = rng.integers(len(groups), size=len(groups))
        yield np.concatenate([groups[i] for i in drawn])


def patient_bootstrap(actual: np.ndarray, outputs: np.ndarray, names: list[str],
                      cuts: tuple | None = None, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> dict[str, list[float]]:
    """95 % percentile intervals of the ``HEADLINE`` figures, resampling *patients* with
    replacement (both eyes of a patient together, as they are not independent)."""
    predicted, score = predicted_grades(outputs, cuts), referable_score(outputs)
    draws: dict[str, list[float]] = {key: [] for key in HEADLINE}
    for chosen in patient_resamples(names, resamples, seed):
        for key, value in headline_metrics(actual[chosen], predicted[chosen],
                                           score[chosen]).items():
            draws[key].append(value)
    return {key: _interval(values) for key, values in draws.items()}


def _interval(values: list[float]) -> list[float]:
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size < 0.5 * len(values):  # undefined in most resamples: no interval
        return [float("nan"), float("nan")]
    return [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]


def at_operating_points(actual: np.ndarray, outputs: np.ndarray,
                        points: dict[str, OperatingPoint]) -> dict:
    """Test sensitivity/specificity (%) at the referable operating points chosen on
    validation, beside their validation figures."""
    truth, score = actual >= REFERABLE_GRADE, referable_score(outputs)
    report = {}
    for name, point in points.items():
        sensitivity, specificity = at_threshold(truth, score, point.threshold)
        report[name] = {"threshold": point.threshold, "sensitivity": sensitivity,
                        "specificity": specificity,
                        "validation_sensitivity": point.sensitivity,
                        "validation_specificity": point.specificity}
    return report


def model_report(test: SplitPredictions, validation: ValidationOutputs, leakage: float | None,
                 tta: str) -> dict:
    """Every test figure of one model, as written to ``metrics/<arch>-<init>.json``, with
    its intervals; the cut-points and operating points applied are fitted here on
    ``validation`` (outputs made as the test outputs are, with or without TTA)."""
    checkpoint = test.checkpoint
    decisions = fit_decisions(validation.grades, validation.outputs)
    cuts = decisions.cuts
    ci95 = patient_bootstrap(test.actual, test.logits, test.images.names, cuts)
    regression = checkpoint.get("head") == "regression"
    return {**evaluation_report(test.actual, test.logits, cuts), "ci95": ci95,
            "operating_points": at_operating_points(test.actual, test.logits,
                                                    decisions.operating_points),
            "test_patient_leakage_percent": leakage, "head": checkpoint.get("head"),
            "regression_loss": checkpoint.get("params", {}).get("train.regression_loss")
            if regression else None,
            "cuts": list(cuts) if cuts else None, "tta": tta,
            "chosen_epoch": checkpoint["epoch"], "chosen_phase": checkpoint["phase"],
            "weighted_loss": checkpoint["weighted_loss"],
            "learned_nothing": learned_nothing_report(
                predicted_grades(validation.outputs, cuts), ci95["qwk"])}


def learned_nothing_report(predicted: np.ndarray, qwk_interval: list[float]) -> dict | None:
    """``learned_nothing`` of ``predicted`` grades and a QWK's interval, as written to a
    metrics file (None for a model that learned something)."""
    verdict = learned_nothing(predicted, qwk_interval[0])
    return verdict._asdict() if verdict else None


def history_csv(checkpoint: dict[str, Any], model_file: str | Path) -> str:
    """The per-epoch table the train stage stored in ``model_file`` (the lab's
    ``acc_train``/``acc_test`` with the validation scores and the epoch's learning
    rate), as CSV text: scores to 4 decimals, the learning rate to 6 significant
    digits (a cosine schedule's last epochs are below 0.0001)."""
    history = checkpoint.get("history")
    if not history:
        raise DataError(f"{model_file}: holds no per-epoch history (a model file of an "
                        "older retino); train it again: "
                        f"dvc repro -f train@{Path(model_file).stem}")
    table = pd.DataFrame(history)
    if "lr" in table:
        table["lr"] = table["lr"].map(lambda rate: f"{rate:.6g}")
    return table.to_csv(index=False, float_format="%.4f")


def prediction_rows(actual: np.ndarray, predicted: np.ndarray) -> list[dict[str, str]]:
    """Per-image rows for DVC's confusion template (labels as strings)."""
    return [{"actual": str(int(a)), "predicted": str(int(p))} for a, p in zip(actual, predicted)]


def patient_leakage_percent(data_folder: str | Path) -> float | None:
    """Share of the test images whose patient's other eye is in the train split: 0 for a
    patient-level split, about 80 % for the lab's per-image split, None (unknown) where
    the image names carry no patient."""
    splits = read_layout(data_folder, eye_names=False)
    leaked = patient_leakage(seen_in_training(splits), splits["test"].names)
    return None if leaked is None else round(100.0 * leaked / len(splits["test"]), 2)
