"""What each phase trains, on which batches, and how a batch reaches the model.

Feature extraction trains ``fc`` alone on features stored once from the frozen
backbone (eval mode, so its BatchNorm statistics stay put too); fine-tuning and
scratch runs train every layer on augmented images (``train.augment``: the lab's
random flips, or the field's augmentation) with a fresh optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from retino.progress import console, stopwatch
from retino.train import distributed
from retino.train.augment import FieldAugmentation
from retino.train.inputs import Prepare, ToModel, TrainData, make_loader, to_device
from retino.train.loop import extract_features
from retino.train.optim import make_optimizer
from retino.train.models import set_backbone_trainable
from retino.train.recipe import PHASE_FEATURES, PHASE_FINE_TUNING, PHASE_SCRATCH, TrainSettings

SCORING_BATCH = 64


@dataclass
class PhaseRun:
    """What one phase trains, on which batches, and how a batch reaches the model."""

    module: nn.Module  # trained: the whole model (DDP-wrapped on several devices) or fc
    scorer: nn.Module  # scored: the same, unwrapped
    fit: DataLoader
    scoring: dict[str, DataLoader]  # "validation" and "test"
    sharded: bool  # the scoring loaders hold this process's share only
    prepare: Prepare  # scoring batches
    # fit batches, augmented with draws from the epoch's generator
    prepare_fit: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    optimizer: torch.optim.Optimizer


def feature_extraction_run(model: nn.Module, data: TrainData, settings: TrainSettings,
                           device: torch.device) -> PhaseRun:
    """``fc`` alone, trained on features stored once from the frozen backbone (eval mode)."""
    set_backbone_trainable(model, False)
    to_model = ToModel(data.mean, data.std, device)
    console.print("computing stored features of the frozen backbone ...")
    with stopwatch.timing("stored features"):
        stored = {name: extract_features(model, make_loader(getattr(data, name), SCORING_BATCH,
                                                            False, settings.num_workers,
                                                            device, shard=True),
                                         to_model, sharded=True)
                  for name in ("fit", "validation", "test")}
    move = to_device(device)
    # every process holds all features and trains fc on them identically: one recipe
    return PhaseRun(
        module=model.fc, scorer=model.fc,
        fit=make_loader(stored["fit"], settings.batch_size, True, 0, device, settings.seed),
        scoring={name: make_loader(stored[name], 1024, False, 0, device)
                 for name in ("validation", "test")}, sharded=False,
        prepare=move, prepare_fit=lambda batch, flips: move(batch),
        optimizer=make_optimizer(model.fc.parameters(), settings))


def image_run(model: nn.Module, data: TrainData, settings: TrainSettings,
              device: torch.device) -> PhaseRun:
    """Every layer, on augmented images, with a fresh optimizer (fine-tuning or scratch)."""
    set_backbone_trainable(model, True)
    to_model = ToModel(data.mean, data.std, device)
    augment = FieldAugmentation(to_model) if settings.augment == "field" else to_model
    return PhaseRun(
        module=compiled(distributed.wrap(model, device), settings.compile), scorer=model,
        fit=make_loader(data.fit, settings.batch_size, True, settings.num_workers, device,
                        settings.seed, shard=True),
        scoring={name: make_loader(getattr(data, name), max(settings.batch_size, SCORING_BATCH),
                                   False, settings.num_workers, device, shard=True)
                 for name in ("validation", "test")}, sharded=distributed.active(),
        prepare=to_model, prepare_fit=augment,
        optimizer=make_optimizer(model.parameters(), settings))


def compiled(module: nn.Module, enabled: bool) -> nn.Module:
    """``module`` through torch.compile when ``enabled`` (compute.compile, CUDA only): the
    compiled module shares its parameters, so the optimizer, the saved weights and the
    scoring (``scorer``, left eager) are those of ``module`` itself."""
    return torch.compile(module) if enabled else module


PHASE_RUNS = {PHASE_FEATURES: feature_extraction_run, PHASE_FINE_TUNING: image_run,
              PHASE_SCRATCH: image_run}
