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

Every epoch draws its shuffling order and flips from generators seeded with
(seed, epoch), not from a stream that earlier epochs advanced. So a run stopped
after epoch k and resumed from its saved state (``retino.resume``) continues
exactly as if it had never stopped.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from retino.device import autocast, memory_format
from retino.inputs import ImageArray, ToModel, TrainData
from retino.metrics import accuracy_percent, quadratic_weighted_kappa
from retino.models import backbone_features, set_backbone_trainable
from retino.progress import console, epoch_bar

PHASE_FEATURES = "feature_extraction"
PHASE_FINE_TUNING = "fine_tuning"
PHASE_SCRATCH = "scratch"
SCORING_BATCH = 64

Prepare = Callable[[torch.Tensor], torch.Tensor]  # a loader batch -> model input


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

    def schedule(self) -> list[tuple[str, int]]:
        """(phase, epochs) in order: two phases from ImageNet, one from scratch."""
        if self.init == "pretrained":
            return [(PHASE_FEATURES, self.epochs_feature_extraction),
                    (PHASE_FINE_TUNING, self.epochs_fine_tuning)]
        return [(PHASE_SCRATCH, self.epochs_feature_extraction + self.epochs_fine_tuning)]


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
    best_key: tuple[float, float] = (-np.inf, -np.inf)  # (val kappa, val accuracy)


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator for one epoch's shuffling (stream 0) or flips (stream 1)."""
    return torch.Generator().manual_seed((seed * 100_003 + epoch) * 2 + stream)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int,
                device: torch.device) -> DataLoader:
    """A DataLoader; a shuffling one carries a generator that ``reseed`` sets per epoch.

    Image arrays deliver whole batches themselves (one read per batch, no stacking)."""
    generator = torch.Generator() if shuffle else None
    collate = ImageArray.collate if isinstance(dataset, ImageArray) else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)


def reseed(loader: DataLoader, seed: int, epoch: int) -> None:
    """Make ``loader``'s next pass use the shuffling order of (seed, epoch)."""
    loader.generator.set_state(epoch_generator(seed, epoch, 0).get_state())


def make_criterion(class_weights: Iterable[float] | None, device: torch.device) -> nn.Module:
    if class_weights is None:
        return nn.CrossEntropyLoss()
    return nn.CrossEntropyLoss(weight=torch.tensor(list(class_weights), dtype=torch.float32,
                                                   device=device))


def make_optimizer(parameters: Iterable[nn.Parameter], settings: TrainSettings) -> torch.optim.SGD:
    return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay)


def to_device(device: torch.device) -> Prepare:
    """Move a ready batch (stored features, or the lab loader's float images) to ``device``."""
    def prepare(inputs: torch.Tensor) -> torch.Tensor:
        inputs = inputs.to(device, non_blocking=True)
        if inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=memory_format(device))
        return inputs
    return prepare


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, prepare: Prepare,
                    description: str) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, running accuracy in %)."""
    device = next(model.parameters()).device
    with epoch_bar(description, len(loader.dataset)) as bar:
        for inputs, labels in loader:
            inputs = prepare(inputs)
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
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device,
                   prepare: Prepare | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(actual labels, float32 logits) over ``loader`` in eval mode."""
    prepare = prepare or to_device(device)
    model.eval()
    labels, outputs = [], []
    for inputs, batch_labels in loader:
        with autocast(device):
            outputs.append(model(prepare(inputs)).float().cpu())
        labels.append(batch_labels)
    return torch.cat(labels).numpy(), torch.cat(outputs).numpy()


@torch.no_grad()
def extract_features(model: nn.Module, loader: DataLoader, prepare: Prepare) -> TensorDataset:
    """Stored backbone features of every image (eval mode, no augmentation)."""
    model.eval()
    device = next(model.parameters()).device
    features, labels = [], []
    for inputs, batch_labels in loader:
        with autocast(device):
            features.append(backbone_features(model, prepare(inputs)).float().cpu())
        labels.append(batch_labels)
    return TensorDataset(torch.cat(features), torch.cat(labels))


def _score(model: nn.Module, loader: DataLoader, prepare: Prepare) -> tuple[float, float]:
    """(accuracy %, quadratic weighted kappa) of ``model`` on ``loader``."""
    device = next(model.parameters()).device
    actual, logits = predict_logits(model, loader, device, prepare)
    predicted = logits.argmax(axis=1)
    return accuracy_percent(actual, predicted), quadratic_weighted_kappa(actual, predicted)


class _Recorder:
    """Appends epoch records and keeps the weights of the best validation epoch."""

    def __init__(self, model: nn.Module, result: TrainResult | None = None):
        self.model = model
        self.result = result or TrainResult()

    def record(self, phase: str, loss: float, acc_train: float,
               test: tuple[float, float], validation: tuple[float, float]) -> None:
        epoch = len(self.result.history) + 1
        entry = EpochRecord(epoch, phase, loss, acc_train, test[0], validation[1], validation[0])
        self.result.history.append(entry)
        key = (validation[1], validation[0])  # kappa first: accuracy rewards grade 0
        if key > self.result.best_key:
            self.result.best_key = key
            self.result.best_epoch = epoch
            self.result.best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        console.print(f"epoch {epoch:>3} {phase:<18} loss {loss:.4f}  acc_train "
                      f"{acc_train:5.1f} %  acc_test {test[0]:5.1f} %  val kappa "
                      f"{validation[1]:.3f}  val acc {validation[0]:5.1f} %")


@dataclass
class PhaseRun:
    """What one phase trains, on which batches, and how a batch reaches the model."""

    module: nn.Module  # the whole model, or only model.fc on stored features
    fit: DataLoader
    scoring: dict[str, DataLoader]  # "validation" and "test"
    prepare: Prepare  # scoring batches
    prepare_fit: Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # with flips
    optimizer: torch.optim.Optimizer


def feature_extraction_run(model: nn.Module, data: TrainData, settings: TrainSettings,
                           device: torch.device) -> PhaseRun:
    """``fc`` alone, trained on features stored once from the frozen backbone (eval mode)."""
    set_backbone_trainable(model, False)
    to_model = ToModel(data.mean, data.std, device)
    console.print("computing stored features of the frozen backbone ...")
    stored = {name: extract_features(model, make_loader(getattr(data, name), SCORING_BATCH,
                                                        False, settings.num_workers, device),
                                     to_model)
              for name in ("fit", "validation", "test")}
    move = to_device(device)
    return PhaseRun(
        module=model.fc, fit=make_loader(stored["fit"], settings.batch_size, True, 0, device),
        scoring={name: make_loader(stored[name], 1024, False, 0, device)
                 for name in ("validation", "test")},
        prepare=move, prepare_fit=lambda batch, flips: move(batch),
        optimizer=make_optimizer(model.fc.parameters(), settings))


def image_run(model: nn.Module, data: TrainData, settings: TrainSettings,
              device: torch.device) -> PhaseRun:
    """Every layer, on randomly flipped images, with a fresh SGD (fine-tuning or scratch)."""
    set_backbone_trainable(model, True)
    to_model = ToModel(data.mean, data.std, device)
    return PhaseRun(
        module=model,
        fit=make_loader(data.fit, settings.batch_size, True, settings.num_workers, device),
        scoring={name: make_loader(getattr(data, name), max(settings.batch_size, SCORING_BATCH),
                                   False, settings.num_workers, device)
                 for name in ("validation", "test")},
        prepare=to_model, prepare_fit=to_model,
        optimizer=make_optimizer(model.parameters(), settings))


PHASE_RUNS = {PHASE_FEATURES: feature_extraction_run, PHASE_FINE_TUNING: image_run,
              PHASE_SCRATCH: image_run}
EpochDone = Callable[[TrainResult, torch.optim.Optimizer], None]


def train_phase(run: PhaseRun, phase: str, epochs: range, settings: TrainSettings,
                recorder: _Recorder, criterion: nn.Module, on_epoch: EpochDone) -> None:
    """Train ``run`` for the global (0-based) epoch numbers in ``epochs``."""
    for epoch in epochs:
        reseed(run.fit, settings.seed, epoch)
        flips = epoch_generator(settings.seed, epoch, 1)
        run.module.train()
        loss, acc = train_one_epoch(run.module, run.fit, criterion, run.optimizer,
                                    lambda batch: run.prepare_fit(batch, flips),
                                    f"{phase} {epoch + 1}")
        recorder.record(phase, loss, acc, _score(run.module, run.scoring["test"], run.prepare),
                        _score(run.module, run.scoring["validation"], run.prepare))
        on_epoch(recorder.result, run.optimizer)


@dataclass
class ResumePoint:
    """A run's state after its last completed epoch."""

    result: TrainResult
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict


def fit(model: nn.Module, data: TrainData, settings: TrainSettings, device: torch.device,
        resume: ResumePoint | None = None,
        on_epoch: EpochDone = lambda result, optimizer: None) -> TrainResult:
    """Run the schedule of ``settings.init`` (from ``resume`` when given); return the
    history and the best validation weights. ``on_epoch`` runs after every epoch."""
    model.to(device=device, memory_format=memory_format(device))
    recorder = _Recorder(model)
    if resume is not None:
        model.load_state_dict(resume.model_state)
        recorder.result = resume.result
    done = len(recorder.result.history)
    criterion = make_criterion(settings.class_weights, device)
    first = 0
    for phase, epochs in settings.schedule():
        last = first + epochs
        if done < last:
            run = PHASE_RUNS[phase](model, data, settings, device)
            if resume is not None and done > first:  # stopped inside this phase
                run.optimizer.load_state_dict(resume.optimizer_state)
            train_phase(run, phase, range(max(first, done), last), settings, recorder,
                        criterion, on_epoch)
        first = last
    return recorder.result


def history_rows(history: list[EpochRecord]) -> list[dict]:
    return [asdict(record) for record in history]
