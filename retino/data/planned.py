"""What params.yaml promises the data stages, checked before any stage runs.

For the synthetic source the whole data set follows from params.yaml, so check-params
can plan its splits (patients, grades and the train/test split, without drawing a
pixel) and refuse a combination that a later stage would stop on after DVC had
already deleted its outputs: no test images, a grade missing from train (the class
weights and a 5-way model need all five), a validation hold-out that leaves too few
fit images or none to validate on. Real sources are checked by the stages that read
them, before heavy work, naming the file.
"""

from __future__ import annotations

import numpy as np

from retino.data.layout import Split
from retino.data.splits import patient_holdout, patient_split
from retino.data.synthetic import plan_dataset
from retino.grading import GRADES, NUM_CLASS
from retino.params import MIN_BATCHNORM_IMAGES, Params


def planned_splits(params: Params) -> dict[str, Split] | None:
    """The train and test splits the pipeline will use, for the synthetic source (None
    for the others: their data decides)."""
    if params.data.source != "synthetic":
        return None
    splits, _ = plan_dataset(params.synthesize.patients, params.synthesize.test_fraction,
                             params.synthesize.seed)
    if params.data.resplit:  # as downscale-images resplits the lab layout
        names = splits["train"].names + splits["test"].names
        labels = np.concatenate([splits["train"].labels, splits["test"].labels])
        splits = patient_split(names, labels, params.data.resplit_test_fraction,
                               params.data.split_seed)
    return splits


def split_problems(params: Params) -> list[str]:
    """What the planned synthetic splits cannot do, each naming the keys to change."""
    splits = planned_splits(params)
    if splits is None:
        return []
    where = (f"synthesize.patients = {params.synthesize.patients}, synthesize.test_fraction"
             f" = {params.synthesize.test_fraction} and synthesize.seed = "
             f"{params.synthesize.seed}" + (
                 f", resplit (data.resplit: true) with data.resplit_test_fraction = "
                 f"{params.data.resplit_test_fraction} and data.split_seed = "
                 f"{params.data.split_seed}," if params.data.resplit else ""))
    if len(splits["test"]) == 0:
        return [f"{where} leaves no test images: more patients or a larger fraction"]
    counts = np.bincount(splits["train"].labels, minlength=NUM_CLASS)
    missing = [f"{g} ({GRADES[g]})" for g in range(NUM_CLASS) if counts[g] == 0]
    if missing:
        return [f"{where} leaves no train images of grade(s) {', '.join(missing)}; every "
                "grade needs train images (class weights, a 5-way model): more patients"]
    return holdout_problems(params, splits["train"], where)


def holdout_problems(params: Params, train: Split, where: str) -> list[str]:
    """The validation hold-out the train stages will draw from ``train`` (the train split
    that ``where`` makes)."""
    kept, held_out = patient_holdout(train.names, train.labels,
                                     params.train.validation_fraction,
                                     np.random.default_rng(params.data.split_seed))
    gpus = params.train.gpus if isinstance(params.train.gpus, int) else 1
    needed = MIN_BATCHNORM_IMAGES * gpus
    if len(held_out) and len(kept) >= needed:
        return []
    return [f"train.validation_fraction = {params.train.validation_fraction} (drawn with "
            f"data.split_seed = {params.data.split_seed}) holds out {len(held_out)} of the "
            f"{len(train)} train images that {where} give, and leaves {len(kept)} to fit; "
            "training needs 1 or "
            f"more to validate on and {needed} or more to fit ({MIN_BATCHNORM_IMAGES} per "
            f"process of train.gpus = {params.train.gpus}): change the fraction or "
            "the set"]
