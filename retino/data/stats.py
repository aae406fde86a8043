"""Per-channel mean/std of the train images, class counts, and class weights.

The mean and std are exact, not estimated from a sample: every train image is read
once and its pixel values are summed as integers (sum and sum of squares per
channel, in int64, so nothing is lost to floating-point accumulation). Values are
on ToTensor's 0..1 scale, so they can go straight into ``Normalize``; the std is the
population std over all pixels.

The statistics go to ``metrics/data_stats.json``; training (and the lab's
``RetinopathyLoader``) read them back with ``load_stats``.

Class weights for the weighted loss are ``w_c = N / (K * n_c)`` (N train images,
K = 5 classes, n_c images of grade c): a class with the average count gets 1, a
class ten times rarer gets ten times the weight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from retino.data.layout import VALIDATION, Split
from retino.data.splits import patient_leakage, seen_in_training
from retino.errors import DataError
from retino.grading import GRADES, NUM_CLASS, majority_baseline_percent, per_grade

STATS_FILE = Path("metrics/data_stats.json")

CHANNELS = ("red", "green", "blue")


@dataclass
class PixelMoments:
    """Running integer sums over uint8 RGB pixels."""

    count: int = 0
    total: np.ndarray = None  # type: ignore[assignment]
    total_sq: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.total = np.zeros(3, dtype=np.int64)
        self.total_sq = np.zeros(3, dtype=np.int64)

    def add(self, rgb: np.ndarray) -> None:
        """Add uint8 pixels of any shape ending in 3 channels."""
        pixels = rgb.reshape(-1, 3)
        self.count += pixels.shape[0]
        self.total += pixels.sum(axis=0, dtype=np.int64)
        squares = pixels.astype(np.uint16)  # 255 * 255 fits in 16 bits
        squares *= squares
        self.total_sq += squares.sum(axis=0, dtype=np.int64)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and population std on the 0..1 scale."""
        mean = self.total / self.count
        var = self.total_sq / self.count - mean * mean
        return mean / 255.0, np.sqrt(np.maximum(var, 0.0)) / 255.0


def channel_moments(chunks: Iterable[np.ndarray],
                    on_images: Callable[[int], None] = lambda n: None) -> PixelMoments:
    """Stream uint8 image chunks (N x H x W x 3) into ``PixelMoments``."""
    moments = PixelMoments()
    for chunk in chunks:
        moments.add(chunk)
        on_images(len(chunk))
    if moments.count == 0:
        raise DataError("no train images to compute statistics from")
    return moments


def class_counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels, minlength=NUM_CLASS)


def class_weights(train_counts: np.ndarray, source: str = "train split") -> np.ndarray:
    """``N / (K * n_c)`` per class; a class absent from train is an error."""
    missing = [f"{c} ({GRADES[c]})" for c in range(NUM_CLASS) if train_counts[c] == 0]
    if missing:
        raise DataError(f"{source}: no images of grade(s) {', '.join(missing)}; every grade "
                        "0-4 needs train images for the weighted loss and a 5-way model")
    return train_counts.sum() / (NUM_CLASS * train_counts)


def stats_document(moments: PixelMoments, splits: dict[str, Split], image_size: int,
                   preprocess: str = "none") -> dict:
    """The content of ``metrics/data_stats.json``."""
    mean, std = moments.mean_std()
    counts = {mode: class_counts(split.labels) for mode, split in splits.items()}
    return {
        "image_size": image_size,
        "preprocess": preprocess,
        "train_pixels": moments.count,
        "mean": dict(zip(CHANNELS, map(float, mean))),
        "std": dict(zip(CHANNELS, map(float, std))),
        "train_images": int(counts["train"].sum()),
        "test_images": int(counts["test"].sum()),
        **({"val_images": int(counts[VALIDATION].sum())} if VALIDATION in counts else {}),
        "class_counts": {mode: per_grade(c, int) for mode, c in counts.items()},
        "class_weights": per_grade(class_weights(counts["train"])),
        "baseline_acc": majority_baseline_percent(splits["test"].labels),
        **leakage_document(splits),
    }


def leakage_document(splits: dict[str, Split]) -> dict:
    """Test images whose patient's other eye is in train (or val): 0 for a patient-level
    split, None (unknown) where the image names carry no patient."""
    leaked = patient_leakage(seen_in_training(splits), splits["test"].names)
    if leaked is None:
        return {"test_images_with_other_eye_in_train": None,
                "test_patient_leakage_percent": None}
    return {"test_images_with_other_eye_in_train": leaked,
            "test_patient_leakage_percent": round(100.0 * leaked / len(splits["test"]), 2)}


@dataclass(frozen=True)
class DataStats:
    """What training reads back from ``metrics/data_stats.json``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_weights: tuple[float, ...]
    image_size: int
    preprocess: str  # data.preprocess the images went through: none | graham
    majority_baseline: float


def read_stats(document: dict) -> DataStats:
    return DataStats(
        mean=tuple(document["mean"][c] for c in CHANNELS),
        std=tuple(document["std"][c] for c in CHANNELS),
        class_weights=tuple(document["class_weights"].values()),
        image_size=int(document["image_size"]),
        preprocess=str(document.get("preprocess", "none")),
        majority_baseline=float(document["baseline_acc"]),
    )


def load_stats(path: str | Path = STATS_FILE) -> DataStats:
    """Read the compute-stats output; a missing file says how to make it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro compute-stats` first, "
                                "or pass mean= and std= explicitly")
    return read_stats(json.loads(path.read_text(encoding="utf-8")))
