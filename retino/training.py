"""Training: the lab's two-phase transfer learning, and training from scratch.

Pretrained runs
  1. feature extraction: the frozen ImageNet backbone, in eval mode, computes the
     features of every fit, validation and test image once; the new ``fc`` is
     trained on those stored features for ``epochs_feature_extraction`` epochs;
  2. fine-tuning: every layer unfrozen, a fresh SGD over all parameters,
     ``epochs_fine_tuning`` epochs on augmented images.
Scratch runs train every layer from random init on augmented images for the sum
of both epoch counts. Each epoch records the lab's table (``acc_train``,
``acc_test``) plus the validation score; the weights kept are those of the epoch
with the best validation kappa, never chosen on test.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset


from retino.dataset import TrainData
from retino.device import autocast, memory_format
from retino.metrics import accuracy_percent, quadratic_weighted_kappa
from retino.models import backbone_features, set_backbone_trainable
from retino.progress import console, epoch_bar

PHASE_FEATURES = "feature_extraction"
PHASE_FINE_TUNING = "fine_tuning"
PHASE_SCRATCH = "scratch"


@dataclass(frozen=True)
class TrainSettings:
    """Everything one run needs besides the model and the data."""

    init: str  # pretrained | scratch
    epochs_feature_extraction: int
    epochs_fine_tuning: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    class_weights: tuple[float, ...] | None  # None: unweighted CrossEntropyLoss
    seed: int
    num_workers: int = 0


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    phase: str
    train_loss: float
    acc_train: float
    acc_test: float
    val_kappa: float
    val_accuracy: float


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int,
                num_workers: int, device: torch.device) -> DataLoader:
    """A DataLoader whose shuffling order depends on ``seed`` alone."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=num_workers > 0)


def make_criterion(class_weights: Iterable[float] | None, device: torch.device) -> nn.Module:
    if class_weights is None:
        return nn.CrossEntropyLoss()
    return nn.CrossEntropyLoss(weight=torch.tensor(list(class_weights), dtype=torch.float32,
                                                   device=device))


def make_optimizer(parameters: Iterable[nn.Parameter], settings: TrainSettings) -> torch.optim.SGD:
    return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay)


def _to_device(inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch to ``device``; image batches take the device's memory format."""
    inputs = inputs.to(device, non_blocking=True)
    if inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=memory_format(device))
    return inputs


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, device: torch.device,
                    description: str) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, running accuracy in %)."""
    with epoch_bar(description, len(loader.dataset)) as bar:
        for inputs, labels in loader:
            inputs = _to_device(inputs, device)
            labels = labels.to(device, non_blocking=True)
            with autocast(device):
                logits = model(inputs)
                loss = criterion(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct = int((logits.argmax(dim=1) == labels).sum())
            bar.update(len(labels), loss.item() * len(labels), correct)
    return bar.loss_sum / bar.images, 100.0 * bar.correct / bar.images


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(actual labels, float32 logits) over ``loader`` in eval mode."""
    model.eval()
    labels, outputs = [], []
    for inputs, batch_labels in loader:
        inputs = _to_device(inputs, device)
        with autocast(device):
            outputs.append(model(inputs).float().cpu())
        labels.append(batch_labels)
    return torch.cat(labels).numpy(), torch.cat(outputs).numpy()


@torch.no_grad()
def extract_features(model: nn.Module, loader: DataLoader, device: torch.device
                     ) -> TensorDataset:
    """Stored backbone features of every image (eval mode, no augmentation)."""
    model.eval()
    features, labels = [], []
    for inputs, batch_labels in loader:
        inputs = _to_device(inputs, device)
        with autocast(device):
            features.append(backbone_features(model, inputs).float().cpu())
        labels.append(batch_labels)
    return TensorDataset(torch.cat(features), torch.cat(labels))


def _score(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """(accuracy %, quadratic weighted kappa) of ``model`` on ``loader``."""
    actual, logits = predict_logits(model, loader, device)
    predicted = logits.argmax(axis=1)
    return accuracy_percent(actual, predicted), quadratic_weighted_kappa(actual, predicted)


class _Recorder:
    """Appends epoch records and keeps the weights of the best validation epoch."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.result = TrainResult()
        self._best_key = (-np.inf, -np.inf)

    def record(self, phase: str, loss: float, acc_train: float,
               test: tuple[float, float], validation: tuple[float, float]) -> None:
        epoch = len(self.result.history) + 1
        entry = EpochRecord(epoch, phase, loss, acc_train, test[0], validation[1], validation[0])
        self.result.history.append(entry)
        key = (validation[1], validation[0])  # kappa first: accuracy rewards grade 0
        if key > self._best_key:
            self._best_key = key
            self.result.best_epoch = epoch
            self.result.best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        console.print(f"epoch {epoch:>3} {phase:<18} loss {loss:.4f}  acc_train "
                      f"{acc_train:5.1f} %  acc_test {test[0]:5.1f} %  val kappa "
                      f"{validation[1]:.3f}  val acc {validation[0]:5.1f} %")


def feature_extraction_phase(model: nn.Module, data: TrainData, settings: TrainSettings,
                             device: torch.device, recorder: _Recorder) -> None:
    """Train ``fc`` alone on features stored once from the frozen backbone."""
    set_backbone_trainable(model, False)
    plain = {name: make_loader(getattr(data, name), settings.batch_size, False, 0,
                               settings.num_workers, device)
             for name in ("fit_plain", "validation", "test")}
    console.print("computing stored features of the frozen backbone ...")
    stored = {name: extract_features(model, loader, device) for name, loader in plain.items()}
    fit = make_loader(stored["fit_plain"], settings.batch_size, True, settings.seed, 0, device)
    scoring = {name: make_loader(stored[name], 1024, False, 0, 0, device)
               for name in ("validation", "test")}
    optimizer = make_optimizer(model.fc.parameters(), settings)
    criterion = make_criterion(settings.class_weights, device)
    for epoch in range(settings.epochs_feature_extraction):
        model.fc.train()
        loss, acc = train_one_epoch(model.fc, fit, criterion, optimizer, device,
                                    f"{PHASE_FEATURES} {epoch + 1}")
        recorder.record(PHASE_FEATURES, loss, acc, _score(model.fc, scoring["test"], device),
                        _score(model.fc, scoring["validation"], device))


def image_phase(model: nn.Module, data: TrainData, settings: TrainSettings,
                device: torch.device, recorder: _Recorder, phase: str, epochs: int) -> None:
    """Train every layer on augmented images with a fresh SGD (fine-tuning or scratch)."""
    set_backbone_trainable(model, True)
    fit = make_loader(data.fit, settings.batch_size, True, settings.seed + 1,
                      settings.num_workers, device)
    scoring = {name: make_loader(getattr(data, name), max(settings.batch_size, 64), False, 0,
                                 settings.num_workers, device)
               for name in ("validation", "test")}
    optimizer = make_optimizer(model.parameters(), settings)
    criterion = make_criterion(settings.class_weights, device)
    for epoch in range(epochs):
        model.train()
        loss, acc = train_one_epoch(model, fit, criterion, optimizer, device,
                                    f"{phase} {epoch + 1}")
        recorder.record(phase, loss, acc, _score(model, scoring["test"], device),
                        _score(model, scoring["validation"], device))


def fit(model: nn.Module, data: TrainData, settings: TrainSettings,
        device: torch.device) -> TrainResult:
    """Run the whole schedule for ``settings.init``; return history and best weights."""
    model.to(device=device, memory_format=memory_format(device))
    recorder = _Recorder(model)
    if settings.init == "pretrained":
        feature_extraction_phase(model, data, settings, device, recorder)
        image_phase(model, data, settings, device, recorder, PHASE_FINE_TUNING,
                    settings.epochs_fine_tuning)
    else:
        image_phase(model, data, settings, device, recorder, PHASE_SCRATCH,
                    settings.epochs_feature_extraction + settings.epochs_fine_tuning)
    return recorder.result


def history_rows(history: list[EpochRecord]) -> list[dict]:
    return [asdict(record) for record in history]
