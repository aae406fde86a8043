"""``train.ema``: an exponential moving average of the weights, for validation and the
saved model.

After every optimizer step each floating-point tensor of the model's state (the
weights and the BatchNorm statistics) moves towards the trained model's by
``1 - decay``; integer buffers (BatchNorm's batch counters) are copied. Early on the
decay is ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates (TensorFlow's
``ExponentialMovingAverage`` with ``num_updates``), so that a short run is not an
average dominated by its random initial weights. When ``train.ema`` is on, the
validation and test scores of every epoch, the chosen epoch and the saved model are
those of the average.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The moving average of ``model``'s state, held in a copy of ``model``."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.decay, self.updates = decay, 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model`` (the trained model, not a wrapper)."""
        self.updates += 1
        weight = 1.0 - self.current_decay()
        trained = model.state_dict()
        averaged, now = [], []
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                averaged.append(value)
                now.append(trained[name])
            else:
                value.copy_(trained[name])
        torch._foreach_lerp_(averaged, now, weight)  # a tensor equal to its target stays put

    def counterpart(self, model: nn.Module, module: nn.Module) -> nn.Module:
        """The average's copy of ``module``, a submodule of ``model`` (or ``model``)."""
        names = {id(sub): name for name, sub in model.named_modules()}
        return self.model.get_submodule(names[id(module)])

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
