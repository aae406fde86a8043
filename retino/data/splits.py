"""Patients and patient-level splits: both eyes of a patient always land on the same side.

EyePACS names each photo ``<patient>_<left|right>``. The public sets whose names carry
no patient (APTOS, IDRiD, Messidor-2 as published, an ``ImageFolder`` tree of other
names) have *unknown* patients: each image is its own "patient", so their splits are
per image and their leakage is unknown, never 0 %. One function draws every
patient-level split in the project (the synthetic set's own test split, the test
split made here for Kaggle or on ``data.resplit``, and the train stage's
validation hold-out): ``stratified_patients``, which takes about the same share of
the patients of each worse-eye grade, so that rare grades land on both sides.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from retino.data.layout import EYE_NAME, VALIDATION, Split
from retino.grading import NUM_CLASS

# The test split made here draws from its own stream of data.split_seed, apart from
# the validation hold-out's.
TEST_SPLIT_STREAM = 1


def patient_of(name: str) -> str:
    """``'10_left'`` -> ``'10'``: both eyes of a patient share the prefix; a name that
    says no eye (``'IDRiD_001'``) is a patient of its own."""
    return name.rsplit("_", 1)[0] if EYE_NAME.fullmatch(name) else name


def patients_known(names: list[str]) -> bool:
    """Whether every name says its patient and eye (``<patient>_<left|right>``)."""
    return all(EYE_NAME.fullmatch(name) for name in names)


def stratified_patients(worse: np.ndarray, fraction: float, rng: np.random.Generator
                        ) -> np.ndarray:
    """Boolean mask over patients: ``round(fraction * n)`` of the ``n`` patients of each
    worse-eye grade, drawn with ``rng``."""
    chosen = np.zeros(len(worse), dtype=bool)
    for grade in range(NUM_CLASS):
        members = rng.permutation(np.flatnonzero(worse == grade))
        chosen[members[: int(round(fraction * len(members)))]] = True
    return chosen


def patient_holdout(names: list[str], labels: np.ndarray, fraction: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Image indices (kept, held_out): about ``fraction`` of the patients held out,
    stratified by each patient's worse eye."""
    eyes: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(names):
        eyes[patient_of(name)].append(index)
    patients = sorted(eyes)
    worse = np.array([max(labels[i] for i in eyes[p]) for p in patients])
    held = stratified_patients(worse, fraction, rng)
    held_out = np.sort(np.array([i for p in np.flatnonzero(held) for i in eyes[patients[p]]],
                                dtype=np.int64))
    kept = np.setdiff1d(np.arange(len(names)), held_out)
    return kept, held_out


def patient_split(names: list[str], labels: np.ndarray, test_fraction: float, seed: int
                  ) -> dict[str, Split]:
    """Train and test splits with no patient on both sides, stratified by worse eye."""
    rng = np.random.default_rng([seed, TEST_SPLIT_STREAM])
    train, test = patient_holdout(names, labels, test_fraction, rng)
    everything = Split(list(names), np.asarray(labels, dtype=np.int64))
    return {"train": everything.subset(train), "test": everything.subset(test)}


def seen_in_training(splits: dict[str, Split]) -> list[str]:
    """The names a run learns from or chooses its epoch on: the train split, and the val
    split where the set has one."""
    return [name for mode in ("train", VALIDATION) for name in
            (splits[mode].names if mode in splits else [])]


def patient_leakage(train_names: list[str], test_names: list[str]) -> int | None:
    """How many test images have an image of the same patient (the other eye) in train;
    None when the names do not say the patients (``patients_known``)."""
    if not patients_known(train_names + test_names):
        return None
    train_patients = {patient_of(name) for name in train_names}
    return sum(patient_of(name) in train_patients for name in test_names)
