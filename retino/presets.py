"""Presets: a named set of params.yaml changes that ``dvc exp run`` applies in one step.

    dvc exp run $(retino preset lab)

``retino preset NAME`` prints the ``-S key=value`` options; DVC itself applies them to
params.yaml (and records them in the experiment), so there is no second config
system: later ``-S`` options override a preset's, and ``dvc exp show`` lists what
changed. Every key is checked against params.yaml's rules when the stages start.
"""

from __future__ import annotations

import shlex

PRESETS: dict[str, dict[str, object]] = {
    # The lab's real experiment, on a GPU box: the lab's folder layout at 512 px, the
    # lab report's schedule (ResNet-50 pretrained: 4 feature-extraction + 6 fine-tuning
    # epochs; scratch runs train for the same 10 epochs), the lab's SGD (lr 1e-3,
    # momentum 0.9, weight decay 5e-4) and batch 4, one GPU. No DataLoader workers:
    # on an H200, 8 workers were never faster than the main process reading the
    # memory-mapped arrays (bench/gpu*.json, docs/performance.md).
    "lab": {
        "data.source": "lab", "data.image_size": 512,
        "train.epochs_feature_extraction": 4, "train.epochs_fine_tuning": 6,
        "train.momentum": 0.9, "train.weight_decay": 0.0005,
        "train.resnet18.batch_size": 4, "train.resnet18.lr": 0.001,
        "train.resnet50.batch_size": 4, "train.resnet50.lr": 0.001,
        "compute.device": "cuda", "compute.loader_workers": 0, "compute.image_workers": 0,
        "evaluate.batch_size": 64,
    },
    # Huang et al. 2023's ResNet-50 recipe for EyePACS (QWK 0.863 on its 42,670-image
    # test set), on a GPU box, on the user's own data.source: 512 px, the regression
    # head, SGD with Nesterov momentum (lr 1e-3, weight decay 5e-4), batch 16, a cosine
    # schedule over 25 epochs, the field's augmentation, both eyes graded together on
    # a patient-level split (data.resplit, so the lab's layout is split by patient
    # too). retino's pretrained runs keep one epoch of fc on stored features before
    # the 24 of every layer (the scratch runs train all 25).
    "field": {
        "data.image_size": 512, "data.resplit": True,
        "train.head": "regression", "train.optimizer": "nesterov", "train.momentum": 0.9,
        "train.weight_decay": 0.0005, "train.lr_schedule": "cosine", "train.warmup_epochs": 0,
        "train.epochs_feature_extraction": 1, "train.epochs_fine_tuning": 24,
        "train.augment": "field",
        "train.resnet18.batch_size": 16, "train.resnet18.lr": 0.001,
        "train.resnet50.batch_size": 16, "train.resnet50.lr": 0.001,
        "evaluate.pair_eyes": True,
        "compute.device": "cuda", "compute.loader_workers": 0, "compute.image_workers": 0,
    },
}


def preset_options(name: str) -> list[str]:
    """``["-S", "data.source=lab", ...]``: the preset as ``dvc exp run`` options."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose {', '.join(PRESETS)}")
    options = []
    for key, value in PRESETS[name].items():
        options += ["-S", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return options


def preset_line(name: str) -> str:
    return shlex.join(preset_options(name))
