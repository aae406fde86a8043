"""Patient-level splits: both eyes of a patient always land on the same side."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from retino import NUM_CLASS
from retino.layout import patient_of


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
