"""One run from start (or resume point) to the weights chosen on validation.

Each epoch records the lab's table (``acc_train``, ``acc_test``) plus the
validation score and the epoch's mean learning rate; the weights kept are those of
the epoch with the best validation kappa, never chosen on test. With ``train.ema``
on, what is scored, chosen and kept is the moving average of the weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from torch import nn

from retino.errors import TrainingDiverged
from retino.grading import (broken_rows, fit_decisions, learned_nothing,
                            learned_nothing_text, predicted_grades, quadratic_weighted_kappa)
from retino.progress import console, stopwatch
from retino.train import distributed
from retino.train.averaging import WeightAverage
from retino.train.device import memory_format
from retino.train.inputs import ToModel, TrainData, epoch_generator, make_loader, set_epoch
from retino.train.loop import Score, make_criterion, predict_logits, score, train_one_epoch
from retino.train.optim import LearningRateSchedule
from retino.train.phases import PHASE_RUNS, SCORING_BATCH, PhaseRun
from retino.train.recipe import TrainSettings


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    phase: str
    train_loss: float
    acc_train: float
    acc_test: float
    val_qwk: float
    val_acc: float
    lr: float  # the mean learning rate of the epoch's batches


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_key: tuple[float, float] = (-np.inf, -np.inf)  # (val kappa, val accuracy)


class Recorder:
    """Appends epoch records and keeps the weights of the best validation epoch."""

    def __init__(self, model: nn.Module, result: TrainResult | None = None):
        self.model = model
        self.result = result or TrainResult()

    def record(self, phase: str, loss: float, acc_train: float, test: Score,
               validation: Score, lr: float) -> None:
        epoch = len(self.result.history) + 1
        self.result.history.append(EpochRecord(
            epoch=epoch, phase=phase, train_loss=loss, acc_train=acc_train,
            acc_test=test.accuracy, val_qwk=validation.kappa,
            val_acc=validation.accuracy, lr=lr))
        key = (validation.kappa, validation.accuracy)  # kappa first: accuracy rewards grade 0
        if key > self.result.best_key:
            self.result.best_key = key
            self.result.best_epoch = epoch
            self.result.best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        console.print(f"epoch {epoch:>3} {phase:<18} loss {loss:.4f}  acc_train "
                      f"{acc_train:5.1f} %  acc_test {test.accuracy:5.1f} %  val QWK "
                      f"{validation.kappa:.3f}  val acc {validation.accuracy:5.1f} %")


@dataclass
class ResumePoint:
    """A run's state after its last completed epoch."""

    result: TrainResult
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict
    schedule_state: dict | None = None  # the phase's learning-rate schedule
    average_state: dict | None = None  # train.ema's moving average, when on


@dataclass
class TrainingState:
    """What besides the model's weights a resumed run needs: the phase's optimizer and
    learning-rate schedule, and the weights' moving average (``train.ema``, else None)."""

    optimizer: torch.optim.Optimizer
    schedule: LearningRateSchedule
    average: WeightAverage | None = None

    def after_step(self, model: nn.Module) -> None:
        self.schedule.step()
        if self.average is not None:
            self.average.update(model)


EpochDone = Callable[[TrainResult, TrainingState], None]


def train_phase(run: PhaseRun, phase: str, epochs: range, settings: TrainSettings,
                recorder: Recorder, criterion: nn.Module, state: TrainingState,
                model: nn.Module, on_epoch: EpochDone) -> None:
    """Train ``run`` (the phase of ``model``) for the global (0-based) epoch numbers in
    ``epochs``."""
    for epoch in epochs:
        set_epoch(run.fit, epoch)
        draws = epoch_generator(distributed.rank_seed(settings.seed), epoch, 1)
        run.module.train()
        with stopwatch.timing("training"):
            loss, acc = train_one_epoch(run.module, run.fit, criterion, state.optimizer,
                                        lambda batch: run.prepare_fit(batch, draws),
                                        f"{phase} {epoch + 1}", sharded=run.sharded,
                                        after_step=lambda: state.after_step(model))
        stop_if_diverged(loss, epoch, phase, settings)
        if run.sharded and state.average is not None:
            distributed.share_main_buffers(state.average.model)
        scores = {}
        for name in ("test", "validation"):  # test: the lab's acc_test column
            with stopwatch.timing(f"scoring {name}"):
                scores[name] = score(run.scorer, run.scoring[name], run.prepare, run.sharded)
        recorder.record(phase, loss, acc, **scores, lr=state.schedule.epoch_lr())
        with stopwatch.timing("writing"):
            on_epoch(recorder.result, state)


def stop_if_diverged(loss: float, epoch: int, phase: str, settings: TrainSettings) -> None:
    """A loss that is not a number means weights that are not numbers: every later epoch
    and every output would be NaN, so the run stops here (its resume state keeps the
    last good epoch, which a changed learning rate makes stale)."""
    if math.isfinite(loss):
        return
    hint = (" or train.regression_loss: smooth_l1, whose gradient stays bounded"
            if settings.head == "regression" and settings.regression_loss == "mse" else "")
    raise TrainingDiverged(
        f"the training loss became {loss} in epoch {epoch + 1} ({phase}): the run "
        f"diverged. Lower {settings.lr_key} (now {settings.lr:g}){hint}, then rerun.")


def fit(model: nn.Module, data: TrainData, settings: TrainSettings, device: torch.device,
        resume: ResumePoint | None = None,
        on_epoch: EpochDone = lambda result, state: None) -> TrainResult:
    """Run the schedule of ``settings.init`` (from ``resume`` when given); return the
    history and the best validation weights. ``on_epoch`` runs after every epoch."""
    model.to(device=device, memory_format=memory_format(device))
    if resume is not None:
        model.load_state_dict(resume.model_state)
    average = WeightAverage(model, settings.ema) if settings.ema > 0 else None
    if average is not None and resume is not None:
        average.load_state_dict(resume.average_state)
    recorder = Recorder(model if average is None else average.model)
    if resume is not None:
        recorder.result = resume.result
    done = len(recorder.result.history)
    criterion = make_criterion(settings.class_weights, device, settings.head,
                               settings.regression_loss, settings.label_smoothing)
    first = 0
    for phase, epochs in settings.schedule():
        last = first + epochs
        if done < last:
            run = PHASE_RUNS[phase](model, data, settings, device)
            if average is not None:  # scored: the average's copy of what trains
                run = replace(run, scorer=average.counterpart(model, run.scorer))
            state = TrainingState(run.optimizer,
                                  LearningRateSchedule(run.optimizer, settings, epochs,
                                                       len(run.fit)), average)
            if resume is not None and done > first:  # stopped inside this phase
                run.optimizer.load_state_dict(resume.optimizer_state)
                state.schedule.load_state_dict(resume.schedule_state)
            train_phase(run, phase, range(max(first, done), last), settings, recorder,
                        criterion, state, model, on_epoch)
        first = last
    return recorder.result


def history_rows(history: list[EpochRecord]) -> list[dict]:
    return [asdict(record) for record in history]


def validation_decisions(model: nn.Module, data: TrainData, settings: TrainSettings,
                         device: torch.device) -> dict:
    """What the chosen weights decide on the validation split, never on test: the
    regression head's cut-points (tuned for QWK), the referable operating points
    (thresholds on the referable score), and the validation outputs themselves (from
    which evaluate fits its decisions again when it averages test outputs over flips,
    and its two-eye model). Stored in the model file."""
    loader = make_loader(data.validation, max(settings.batch_size, SCORING_BATCH), False,
                         settings.num_workers, device)
    with stopwatch.timing("scoring validation"):
        actual, outputs = predict_logits(model, loader, device,
                                         ToModel(data.mean, data.std, device))
    validation = {"names": list(data.validation.names), "grades": actual.tolist(),
                  "outputs": torch.from_numpy(outputs)}
    broken = broken_rows(outputs)
    if broken:
        warn_broken_outputs(broken, len(outputs))
    decisions = fit_decisions(actual, outputs)
    return {"cuts": list(decisions.cuts) if decisions.cuts else None,
            "operating_points": {name: point._asdict()
                                 for name, point in decisions.operating_points.items()},
            "validation": validation}


def training_verdict(name: str, decisions: dict, weighted_loss: bool = False) -> str | None:
    """In words, when the chosen weights grade validation no better than chance (judged
    on the validation QWK itself: there is no interval at this point)."""
    validation = decisions["validation"]
    actual = np.asarray(validation["grades"])
    predicted = predicted_grades(validation["outputs"].numpy(), decisions["cuts"])
    verdict = learned_nothing(predicted, quadratic_weighted_kappa(actual, predicted))
    return learned_nothing_text(name, verdict, weighted_loss=weighted_loss) if verdict else None


def warn_broken_outputs(broken: int, images: int) -> None:
    """Weights whose eval-mode outputs are not numbers (BatchNorm's running statistics far
    from the batches', typically in a short from-scratch run) get no cut-points and no
    operating points; the stage says so, and evaluate's figures show a broken model."""
    console.print(f"[bold red]warning:[/] the chosen weights give NaN or infinite outputs on "
                  f"{broken} of {images} validation images in eval mode: this model is "
                  "not usable (train longer or lower the lr); no cut-points or operating "
                  "points were chosen")
