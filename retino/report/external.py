"""External validation: a trained model scored on a set from other clinics and cameras.

The figure reviewers ask for first: a grader tested only on the split of its own
training set is tested on the same cameras, graders and population it learned from.
The external set is downscaled as the training data was (downscale-external) and
normalised with the checkpoint's own statistics; the cut-points and referable
operating points are those evaluate applies, fitted on the model's own validation
split (never on the external set); the intervals resample patients where the names
say them, else images. What an external report holds beside the in-domain one: the
set, which of its images (``external.split``) and how the intervals were drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retino.data.fingerprints import (SharedPhoto, read_fingerprints, set_fingerprints,
                                      shared_photos, shared_report)  # noqa: F401
from retino.data.layout import EXTERNAL_MODE, read_split
from retino.data.splits import patients_known
from retino.errors import DataError
from retino.grading import predicted_grades
from retino.report.evaluation import (SplitPredictions, ValidationOutputs,
                                      learned_nothing_report, model_report)
from retino.report.pairing import paired_eyes_report

# In-domain facts that say nothing of the external set: the leakage is that of the
# training set's test split.
IN_DOMAIN_ONLY = ("test_patient_leakage_percent",)


def external_report(test: SplitPredictions, validation: ValidationOutputs, tta: str,
                    source: str, split: str, pair_eyes: bool) -> dict:
    """Every figure of one model on external set ``source``, as written to
    ``metrics/external/<source>/<arch>-<init>.json``: the keys of the model's metrics
    file (less ``IN_DOMAIN_ONLY``) with ``source``, ``split`` and ``resampled``; the
    learned-nothing verdict is the external set's own (its predictions, its QWK
    interval); with ``pair_eyes``, the two-eye figures where the set's names pair the
    eyes (else None)."""
    names = test.images.names
    known = patients_known(names)
    report = model_report(test, validation, None, tta)
    for key in IN_DOMAIN_ONLY:
        report.pop(key)
    report["learned_nothing"] = learned_nothing_report(
        predicted_grades(test.logits, report["cuts"]), report["ci95"]["qwk"])
    external = {"source": source, "split": split,
                "resampled": "patients" if known else "images", **report}
    if pair_eyes:
        external["paired_eyes"] = (paired_eyes_report(validation, test.actual, test.logits,
                                                      names) if known else None)
    return external


def names_mean_something(training_source: str, external_source: str) -> bool:
    """Whether a name shared by the two sets says that they share a photo: not where one
    of them is the synthetic set, whose names are invented."""
    return "synthetic" not in (training_source, external_source)


def photos_of_training(external: Path, data: Path, compare_names: bool, source: str
                       ) -> tuple[list[SharedPhoto], np.ndarray, int]:
    """(the images of the downscaled external set ``external`` that are photos of the
    training data ``data``, the indices of the others, how many images the external set
    has); an external set made only of training photos stops."""
    split = read_split(external, EXTERNAL_MODE, eye_names=False)
    prints = read_fingerprints(external, EXTERNAL_MODE, len(split))
    shared = shared_photos(split.names, prints, *set_fingerprints(data), compare_names)
    left_out = {photo.image for photo in shared}
    keep = np.array([i for i, n in enumerate(split.names) if n not in left_out],
                    dtype=np.int64)
    if not len(keep):
        raise DataError(f"{external}: every one of its {len(split)} images is a photo of the "
                        f"training data in {data}: {source} is no outside test of this model")
    return shared, keep, len(split)
