"""The recipe of one training run: its phases in order and the optimiser settings.

Pretrained runs follow the lab's two phases:
  1. feature extraction: the frozen ImageNet backbone, in eval mode, computes the
     features of every fit, validation and test image once; the new ``fc`` is
     trained on those stored features for ``epochs_feature_extraction`` epochs;
  2. fine-tuning: every layer unfrozen, a fresh optimizer (and learning-rate
     schedule) over all parameters, ``epochs_fine_tuning`` epochs on augmented images.
Scratch runs train every layer from random init on augmented images for the sum
of both epoch counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from retino.params import TrainParams

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
    seed: int  # train.run_seed: initial weights, batch order, flips
    num_workers: int = 0
    head: str = "classification"  # | regression
    regression_loss: str = "smooth_l1"  # | mse, regression head only
    lr_key: str = "lr"  # the params.yaml key of ``lr``, for messages
    compile: bool = False  # compute.compile: torch.compile the image phases' training step
    augment: str = "flips"  # | field: rotation, scale, shift and colour jitter too
    lr_schedule: str = "constant"  # | cosine, per batch over each phase
    warmup_epochs: int = 0  # linear warm-up at the start of each phase
    optimizer: str = "sgd"  # | nesterov | adamw
    ema: float = 0.0  # decay of the moving average of the weights; 0 = off
    label_smoothing: float = 0.0  # classification head's cross-entropy

    def schedule(self) -> list[tuple[str, int]]:
        """(phase, epochs) in order: two phases from ImageNet, one from scratch."""
        if self.init == "pretrained":
            return [(PHASE_FEATURES, self.epochs_feature_extraction),
                    (PHASE_FINE_TUNING, self.epochs_fine_tuning)]
        return [(PHASE_SCRATCH, self.epochs_feature_extraction + self.epochs_fine_tuning)]


def train_settings(train: TrainParams, arch: str, init: str, num_workers: int,
                   class_weights: tuple[float, ...], compile_step: bool = False
                   ) -> TrainSettings:
    """The settings of run ``<arch>-<init>`` from params.yaml; ``class_weights`` (from
    the train statistics) are used only when ``train.weighted_loss`` is on."""
    arch_params = getattr(train, arch)
    return TrainSettings(
        init=init, epochs_feature_extraction=train.epochs_feature_extraction,
        epochs_fine_tuning=train.epochs_fine_tuning, batch_size=arch_params.batch_size,
        lr=arch_params.lr, momentum=train.momentum, weight_decay=train.weight_decay,
        class_weights=class_weights if train.weighted_loss else None,
        seed=train.run_seed, num_workers=num_workers, head=train.head,
        regression_loss=train.regression_loss, lr_key=f"train.{arch}.lr",
        compile=compile_step, augment=train.augment, lr_schedule=train.lr_schedule,
        warmup_epochs=train.warmup_epochs, optimizer=train.optimizer, ema=float(train.ema),
        label_smoothing=float(train.label_smoothing))
