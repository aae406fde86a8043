"""The loops: one training epoch, scoring, and the stored features of the frozen backbone.

Only the training step runs under bf16 autocast (on CUDA). Scoring and the stored
features run in true float32 (``full_precision``: not TF32 either): bf16 keeps 8 bits
of mantissa and TF32 10, so logits of close classes tie, which moves the argmax and
the ranking behind the referable AUC.

The training step keeps the host out of the device's way: the loss and the count of
right answers add up on the device, and the host reads them only to refresh the
progress bar (at most once every ``READ_SECONDS``) and at the end of the epoch.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from retino.grading import (DEFAULT_CUTS, accuracy_percent, predicted_grades,
                            quadratic_weighted_kappa)
from retino.progress import epoch_bar
from retino.train.device import autocast, device_constant, full_precision
from retino.train import distributed
from retino.train.inputs import Prepare, loader_images, to_device
from retino.train.models import backbone_features


class Score(NamedTuple):
    """How well a model grades one set of images."""

    accuracy: float  # %
    kappa: float  # quadratic weighted


def summed_weights(weight: torch.Tensor | None, grades: torch.Tensor) -> torch.Tensor:
    """The denominator of a batch's mean loss: its images' class weights added up, or its
    image count when the loss is unweighted (filled on the device, not copied there)."""
    if weight is None:
        return torch.full((), float(len(grades)), device=grades.device)
    return weight[grades].sum()


class GradeCrossEntropyLoss(nn.CrossEntropyLoss):
    """The lab's ``CrossEntropyLoss``, class-weighted or not, with
    ``train.label_smoothing``; it can also give its mean as (numerator, denominator),
    for a batch shared by several processes.

    Each image weighs its own grade's weight, and its smoothed target is ``1 - e`` on
    its grade plus ``e / 5`` on every grade alike. With weights *and* smoothing that is
    not what PyTorch computes: ``cross_entropy(weight=w, label_smoothing=e)`` weighs the
    smoothing term grade by grade with ``w``, which pulls every image towards the rare,
    heavy grades (with EyePACS' weights, its loss-optimal output for a grade-0 photo
    makes grade 4 the most likely at e = 0.2). So for that pair each image's loss is
    its grade's weight times its unweighted smoothed cross-entropy, and the mean divides
    by the weights' sum; with one of the two, or neither, PyTorch's loss is this one and
    is used as it is.
    """

    def forward(self, outputs: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
        if not self._weighted_and_smoothed():
            return super().forward(outputs, grades)
        total, weights = self.parts(outputs, grades)
        return total / weights

    def parts(self, outputs: torch.Tensor, grades: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean as (sum of the images' weighted losses, sum of their weights)."""
        if not self._weighted_and_smoothed():
            total = nn.functional.cross_entropy(outputs, grades, weight=self.weight,
                                                reduction="sum",
                                                label_smoothing=self.label_smoothing)
            return total, summed_weights(self.weight, grades)
        losses = nn.functional.cross_entropy(outputs, grades, reduction="none",
                                             label_smoothing=self.label_smoothing)
        return (self.weight[grades] * losses).sum(), summed_weights(self.weight, grades)

    def _weighted_and_smoothed(self) -> bool:
        return self.weight is not None and self.label_smoothing > 0


class GradeRegressionLoss(nn.Module):
    """MSE or SmoothL1 between a one-output head's score and the grade; with class
    weights, each image weighs its grade's weight and the mean is weighted, as
    ``CrossEntropyLoss(weight=...)`` weighs images for the classification head."""

    def __init__(self, kind: str, weight: torch.Tensor | None = None):
        super().__init__()
        self.kind, self.weight = kind, weight
        self.per_image = {"mse": nn.functional.mse_loss,
                          "smooth_l1": nn.functional.smooth_l1_loss}[kind]

    def forward(self, outputs: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return self._losses(outputs, grades).mean()
        total, weights = self.parts(outputs, grades)
        return total / weights

    def parts(self, outputs: torch.Tensor, grades: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean as (sum of the weighted losses, sum of the weights)."""
        losses = self._losses(outputs, grades)
        if self.weight is not None:
            losses = self.weight[grades] * losses
        return losses.sum(), summed_weights(self.weight, grades)

    def _losses(self, outputs: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
        return self.per_image(outputs[:, 0], grades.to(outputs.dtype), reduction="none")


def make_criterion(class_weights: Iterable[float] | None, device: torch.device,
                   head: str = "classification", regression_loss: str = "smooth_l1",
                   label_smoothing: float = 0.0) -> nn.Module:
    """The loss of ``head``: cross-entropy for classification (with ``label_smoothing``),
    ``regression_loss`` on the grade for regression; weighted by grade when
    ``class_weights`` are given."""
    weight = None if class_weights is None else torch.tensor(
        list(class_weights), dtype=torch.float32, device=device)
    if head == "regression":
        return GradeRegressionLoss(regression_loss, weight)
    return GradeCrossEntropyLoss(weight=weight, label_smoothing=float(label_smoothing))


def batch_loss(criterion: nn.Module, outputs: torch.Tensor, grades: torch.Tensor,
               sharded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss to backpropagate for one batch, and what it adds to the epoch's loss sum
    (a float64 tensor on the device: nothing is read back to the host here).

    On one process: the criterion's mean, and that mean times the batch's images. With
    ``sharded`` (this process holds its share of a batch of several processes), the
    gradient must be the one of a single process on the whole batch: each process
    divides its (weighted) loss sum by the denominator over *every* process (the sum
    of the weights, or the image count), times the process count, because
    DistributedDataParallel averages the gradients. Its part of the loss sum is its
    share of the batch's mean times the batch's images, so the parts add up to the
    one-process sum."""
    if not sharded:
        loss = criterion(outputs, grades)
        return loss, loss.detach().double() * len(grades)
    total, denominator = criterion.parts(outputs, grades)
    images = torch.full((), float(len(grades)), dtype=torch.float64, device=grades.device)
    batch_denominator, batch_images = distributed.sum_tensor_over_ranks(
        torch.stack([denominator.detach().double(), images]))
    loss = total * (distributed.world_size() / batch_denominator).to(total.dtype)
    return loss, total.detach().double() / batch_denominator * batch_images


def batch_grades(outputs: torch.Tensor) -> torch.Tensor:
    """Grades of a batch during training: the highest logit, or the regression score cut
    halfway between grades (the tuned cut-points come after training)."""
    if outputs.shape[1] == 1:
        cuts = device_constant("default cuts", list(DEFAULT_CUTS), outputs)
        return torch.bucketize(outputs[:, 0].detach(), cuts, right=True)
    return outputs.argmax(dim=1)


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, prepare: Prepare,
                    description: str, sharded: bool = False,
                    after_step: Callable[[], None] | None = None) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, running accuracy in %), over every
    process's share when ``sharded``. ``after_step`` runs after every optimizer step
    (the learning-rate schedule, the weights' moving average). The loss and the right
    answers add up on the device; the host reads them for the bar at most every
    ``READ_SECONDS`` and once at the end."""
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with epoch_bar(description, loader_images(loader), READ_SECONDS) as bar:
        for inputs, labels in loader:
            inputs = prepare(inputs)
            labels = labels.to(device, non_blocking=True)
            with autocast(device):
                logits = model(inputs)
                loss, loss_part = batch_loss(criterion, logits.float(), labels, sharded)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            loss_sum += loss_part
            correct += (batch_grades(logits.detach().float()) == labels).sum()
            bar.advance(len(labels))
            if bar.due():
                bar.show(*read_numbers(loss_sum, correct))
        images = bar.images
        totals = torch.stack([loss_sum, correct.double(),
                              torch.full((), float(images), dtype=torch.float64,
                                         device=device)])
        if sharded:
            distributed.share_main_buffers(model)  # the model process 0 saves, everywhere
            totals = distributed.sum_tensor_over_ranks(totals)
        numbers = read_numbers(loss_sum, correct, *totals)
        bar.show(*numbers[:2])
    loss_total, right, images = numbers[2:]
    return loss_total / images, 100.0 * right / images


READ_SECONDS = 1.0  # the running loss and accuracy reach the host at most this often


def read_numbers(*values: torch.Tensor) -> list[float]:
    """Device scalars as host numbers, in one read: the one place the training loop
    waits for the device."""
    return torch.stack([value.double() for value in values]).tolist()


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device,
                   prepare: Prepare | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(actual labels, logits) over ``loader`` in eval mode, computed in float32; empty
    arrays for a loader with nothing to hand (a process's share of fewer images than
    processes)."""
    prepare = prepare or to_device(device)
    model.eval()
    labels, outputs = [], []
    with full_precision():
        for inputs, batch_labels in loader:
            outputs.append(model(prepare(inputs).float()).cpu())
            labels.append(batch_labels)
    return _joined(labels, np.int64), _joined(outputs, np.float32)


def _joined(pieces: list[torch.Tensor], dtype: type) -> np.ndarray:
    """The batches' tensors one after the other, or an empty array when there were none
    (its shape then comes from the other processes' pieces: ``gather_shards``)."""
    return torch.cat(pieces).numpy() if pieces else np.empty((0,), dtype=dtype)


def scored_outputs(model: nn.Module, loader: DataLoader, prepare: Prepare,
                   sharded: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(actual labels, outputs) of ``model`` over ``loader``; with ``sharded``, every
    process's share gathered in order, so all hold the outputs of the whole set."""
    device = next(model.parameters()).device
    actual, outputs = predict_logits(model, loader, device, prepare)
    if sharded:
        actual, outputs = distributed.gather_shards(actual), distributed.gather_shards(outputs)
    return actual, outputs


def score(model: nn.Module, loader: DataLoader, prepare: Prepare, sharded: bool = False
          ) -> Score:
    """Accuracy and quadratic weighted kappa of ``model`` on ``loader`` (with
    ``sharded``, on every process's share gathered: all see the same score)."""
    actual, logits = scored_outputs(model, loader, prepare, sharded)
    predicted = predicted_grades(logits)  # regression: halfway cuts while training
    return Score(accuracy_percent(actual, predicted), quadratic_weighted_kappa(actual, predicted))


@torch.no_grad()
def extract_features(model: nn.Module, loader: DataLoader, prepare: Prepare,
                     sharded: bool = False) -> TensorDataset:
    """Stored backbone features of every image (eval mode, no augmentation, float32);
    with ``sharded``, every process's share gathered, so each holds all of them."""
    model.eval()
    features, labels = [], []
    with full_precision():
        for inputs, batch_labels in loader:
            features.append(backbone_features(model, prepare(inputs)).cpu())
            labels.append(batch_labels)
    features, labels = _joined(features, np.float32), _joined(labels, np.int64)
    if sharded:
        features, labels = distributed.gather_shards(features), distributed.gather_shards(labels)
    return TensorDataset(torch.from_numpy(features), torch.from_numpy(labels))
