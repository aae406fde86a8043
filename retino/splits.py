"""Patient-level splits: both eyes of a patient always land on the same side."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from retino import NUM_CLASS
from retino.layout import Split, patient_of


def patient_holdout(names: list[str], labels: np.ndarray, fraction: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): about ``fraction`` of patients held out, stratified
    by each patient's worse eye, so rare grades appear on both sides."""
    eyes: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(names):
        eyes[patient_of(name)].append(index)
    patients = sorted(eyes)
    worse = np.array([max(labels[i] for i in eyes[p]) for p in patients])
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for grade in range(NUM_CLASS):
        members = rng.permutation(np.flatnonzero(worse == grade))
        take = int(round(fraction * len(members)))
        held += [i for p in members[:take] for i in eyes[patients[p]]]
    held_out = np.sort(np.array(held, dtype=np.int64))
    kept = np.setdiff1d(np.arange(len(names)), held_out)
    return kept, held_out


def patient_split(names: list[str], labels: np.ndarray, test_fraction: float, seed: int
                  ) -> dict[str, Split]:
    """Train and test splits with no patient on both sides, stratified by worse eye."""
    train, test = patient_holdout(names, labels, test_fraction, seed)
    everything = Split(list(names), np.asarray(labels, dtype=np.int64))
    return {"train": everything.subset(train), "test": everything.subset(test)}


def patient_leakage(train_names: list[str], test_names: list[str]) -> int:
    """How many test images have an image of the same patient (the other eye) in train."""
    train_patients = {patient_of(name) for name in train_names}
    return sum(patient_of(name) in train_patients for name in test_names)
