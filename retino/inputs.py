"""The pipeline's input path: uint8 arrays in, normalised (and flipped) batches on the device.

``ImageArray`` yields raw ``H x W x 3`` uint8 images from the memory-mapped
``<mode>.npy`` of downscale-images; nothing is decoded per epoch. ``ToModel``
turns a uint8 batch into what the network sees *on the device*: float, normalised
with the train statistics, randomly flipped when training, in the device's memory
format. A ``N x H x W x 3`` batch viewed as ``N x 3 x H x W`` already is
channels_last, so the GPU gets its preferred layout without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from retino.arrays import array_path, open_images
from retino.device import memory_format
from retino.layout import read_split
from retino.problems import DataError
from retino.splits import patient_holdout


class ImageArray(Dataset):
    """Rows of one image array with their grades; ``(uint8 H x W x 3 tensor, grade)``."""

    def __init__(self, path: str | Path, rows: Sequence[int], labels: np.ndarray,
                 names: Sequence[str]):
        self.path = Path(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.names = list(names)
        self._images: np.ndarray | None = None  # opened lazily, once per worker process

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        return torch.from_numpy(np.array(self._images[self.rows[index]])), int(self.labels[index])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}  # workers map the file themselves

    @staticmethod
    def from_split(folder: str | Path, mode: str) -> "ImageArray":
        """Every image of ``mode`` in the downscaled set ``folder``, checked against its CSV."""
        split = read_split(folder, mode)
        open_images(array_path(folder, mode), len(split))
        return ImageArray(array_path(folder, mode), np.arange(len(split)), split.labels,
                          split.names)

    def subset(self, indices: Sequence[int]) -> "ImageArray":
        indices = np.asarray(indices, dtype=np.int64)
        return ImageArray(self.path, self.rows[indices], self.labels[indices],
                          [self.names[i] for i in indices])


class ToModel:
    """uint8 ``N x H x W x 3`` batches -> normalised float ``N x 3 x H x W`` on ``device``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        self.device = device
        # (x / 255 - mean) / std, folded into one multiply-add on the 0..255 scale
        scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))
        self.scale = scale.view(1, 3, 1, 1).to(device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
                      * 255.0 * scale.view(1, 3, 1, 1)).to(device)

    def __call__(self, batch: torch.Tensor, flips: torch.Generator | None = None) -> torch.Tensor:
        """Normalise ``batch``; with a ``flips`` generator, flip each image at random
        horizontally and vertically (independently, p = 0.5 each)."""
        images = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        images = images.float() * self.scale + self.shift
        if flips is not None:
            images = random_flips(images, flips)
        return images.contiguous(memory_format=memory_format(self.device))


def random_flips(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right and/or upside down, decided by ``generator`` (CPU).

    The lab's two augmentations: a mirrored left eye looks like a right eye, and
    EyePACS holds photos taken upside down. Drawing on a CPU generator seeded per
    epoch keeps training reproducible and resumable on any device.
    """
    draws = torch.rand(2, images.shape[0], generator=generator) < 0.5
    horizontal, vertical = (d.to(images.device).view(-1, 1, 1, 1) for d in draws)
    images = torch.where(horizontal, images.flip(3), images)
    return torch.where(vertical, images.flip(2), images)


@dataclass(frozen=True)
class TrainData:
    """The image sets of one training run, and the statistics that normalise them."""

    fit: ImageArray
    validation: ImageArray
    test: ImageArray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_train_data(folder: str | Path, mean: Sequence[float], std: Sequence[float],
                    validation_fraction: float, seed: int) -> TrainData:
    """Split the downscaled train split by patient into fit and validation."""
    images = ImageArray.from_split(folder, "train")
    kept, held_out = patient_holdout(images.names, images.labels, validation_fraction, seed)
    if len(kept) == 0 or len(held_out) == 0:
        raise DataError(f"{folder}: train.validation_fraction = {validation_fraction} leaves "
                        f"{len(kept)} fit and {len(held_out)} validation images; both need some")
    return TrainData(fit=images.subset(kept), validation=images.subset(held_out),
                     test=ImageArray.from_split(folder, "test"),
                     mean=tuple(mean), std=tuple(std))
