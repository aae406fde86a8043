"""The optimizer and the learning-rate schedule of one training phase.

``train.optimizer``: the lab's SGD with momentum (``sgd``), the same with Nesterov
momentum (``nesterov``), or AdamW (``adamw``, which ignores ``train.momentum``), each
with ``train.<arch>.lr`` and ``train.weight_decay``. ``train.lr_schedule``: the lab's
constant rate, or a cosine decay from the rate to 0 over the phase, stepped per batch,
after ``train.warmup_epochs`` of linear warm-up. Each phase of a run starts a fresh
optimizer and a fresh schedule, as the lab's fine-tuning does.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from retino.train.recipe import TrainSettings


def make_optimizer(parameters: Iterable[nn.Parameter],
                   settings: TrainSettings) -> torch.optim.Optimizer:
    """The optimizer ``train.optimizer`` names, at the run's lr and weight decay."""
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay,
                           nesterov=settings.optimizer == "nesterov")


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """The learning rate of a phase's batch ``step`` (0-based, of ``total``), as a share
    of ``train.<arch>.lr``: rising linearly over the first ``warmup`` batches, then 1
    (constant) or ``(1 + cos(pi * progress)) / 2`` (cosine), which is 1 at the end of
    the warm-up and 0 at ``step == total``, the end of the phase."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = min(step - warmup, total - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class LearningRateSchedule:
    """Sets the optimizer's learning rate before every batch of one phase of ``epochs``
    epochs of ``batches`` batches; its state (the batches done) is in the resume state."""

    def __init__(self, optimizer: torch.optim.Optimizer, settings: TrainSettings, epochs: int,
                 batches: int):
        self.optimizer, self.base, self.kind = optimizer, settings.lr, settings.lr_schedule
        self.total, self.warmup = epochs * batches, settings.warmup_epochs * batches
        self.steps, self._epoch_factors = 0, []
        self._apply()

    def factor(self) -> float:
        return lr_factor(self.steps, self.total, self.warmup, self.kind)

    def step(self) -> None:
        """After a batch: note the rate it used, and set the next batch's."""
        self._epoch_factors.append(self.factor())
        self.steps += 1
        self._apply()

    def epoch_lr(self) -> float:
        """The mean learning rate of the batches since the last call (one epoch's)."""
        factors, self._epoch_factors = self._epoch_factors, []
        return self.base * (sum(factors) / len(factors) if factors else self.factor())

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self._apply()

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.base * self.factor()
