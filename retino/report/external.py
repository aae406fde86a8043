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

from retino.data.splits import patients_known
from retino.report.evaluation import SplitPredictions, ValidationOutputs, model_report
from retino.report.pairing import paired_eyes_report

# In-domain facts that say nothing of the external set: the leakage is that of the
# training set's test split, the learned-nothing verdict that of its validation split.
IN_DOMAIN_ONLY = ("test_patient_leakage_percent", "learned_nothing")


def external_report(test: SplitPredictions, validation: ValidationOutputs, tta: str,
                    source: str, split: str, pair_eyes: bool) -> dict:
    """Every figure of one model on external set ``source``, as written to
    ``metrics/external/<source>/<arch>-<init>.json``: the keys of the model's metrics
    file (less ``IN_DOMAIN_ONLY``) with ``source``, ``split`` and ``resampled``; with
    ``pair_eyes``, the two-eye figures where the set's names pair the eyes (else None)."""
    names = test.images.names
    known = patients_known(names)
    report = model_report(test, validation, None, tta)
    for key in IN_DOMAIN_ONLY:
        report.pop(key)
    external = {"source": source, "split": split,
                "resampled": "patients" if known else "images", **report}
    if pair_eyes:
        external["paired_eyes"] = (paired_eyes_report(validation, test.actual, test.logits,
                                                      names) if known else None)
    return external
