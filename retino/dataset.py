"""The lab's ``RetinopathyLoader``: JPEGs decoded in ``__getitem__``, as the lab did.

This is the lab-compatible way to read a lab-layout folder of JPEGs (your own
``data/`` folder, for instance). The pipeline itself decodes each photo once in
downscale-images and trains from uint8 arrays (``retino.inputs``); ``bench/run.py``
measures the two against each other.

``RetinopathyLoader(img_path='data', mode='train')`` reads ``train_img.csv`` and
``train_label.csv`` from the folder that holds ``data/`` and yields
``(image, label)``: a float tensor 3 x H x W normalised with the train split's
statistics, and the grade as an int.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from retino.layout import IMAGE_FOLDER, DataError, image_path, read_split
from retino.stats import DataStats, read_stats

STATS_FILE = Path("metrics/data_stats.json")


def image_transform(mode: str, mean: Sequence[float], std: Sequence[float]) -> transforms.Compose:
    """Random flips in train mode only, then ToTensor, then Normalize.

    Flips are the augmentation a fundus allows without changing its grade: a left
    eye mirrored looks like a right eye, and EyePACS holds photos taken upside down.
    """
    steps: list = []
    if mode == "train":
        steps += [transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip()]
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def load_stats(path: str | Path = STATS_FILE) -> DataStats:
    """Read the compute-stats output; a missing file says how to make it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro compute-stats` first, "
                                "or pass mean= and std= explicitly")
    return read_stats(json.loads(path.read_text(encoding="utf-8")))


class FundusImages(Dataset):
    """Named images of one folder with their grades, decoded on access."""

    def __init__(self, image_folder: str | Path, names: Sequence[str], labels: np.ndarray,
                 transform: transforms.Compose):
        self.image_folder = Path(image_folder)
        self.names = list(names)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = image_path(self.image_folder, self.names[index])
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (FileNotFoundError, OSError) as error:
            raise DataError(f"{path}: cannot read image ({error})") from None
        return self.transform(rgb), int(self.labels[index])

    @staticmethod
    def from_split(folder: str | Path, mode: str, transform: transforms.Compose
                   ) -> "FundusImages":
        """Every image listed in ``mode``'s CSVs of the lab-layout ``folder``."""
        split = read_split(folder, mode)
        return FundusImages(Path(folder) / IMAGE_FOLDER, split.names, split.labels, transform)


class RetinopathyLoader(FundusImages):
    """The lab's dataset, with its known bugs fixed.

    Differences from the lab's skeleton:

    * every CSV row is read (``header=None``); ``pd.read_csv`` without it ate the
      first row of each split, leaving the famous 28,099 / 7,025;
    * the path is ``<img_path>/<name>.jpeg``; the skeleton's ``' .jpeg'`` added a space;
    * ``ToTensor`` runs before ``Normalize``, which needs a tensor;
    * random flips only in ``mode='train'``; the test split is never augmented;
    * normalisation uses the exact train statistics from compute-stats
      (``metrics/data_stats.json``) unless ``mean`` and ``std`` are given.
    """

    def __init__(self, img_path: str | Path, mode: str, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, stats_file: str | Path = STATS_FILE):
        if mode not in ("train", "test"):
            raise ValueError(f"unknown mode {mode!r}: choose train or test")
        if mean is None or std is None:
            stats = load_stats(stats_file)
            mean, std = stats.mean, stats.std
        split = read_split(Path(img_path).parent, mode)
        super().__init__(img_path, split.names, split.labels, image_transform(mode, mean, std))
        self.mode = mode
        self.img_name, self.label = self.names, self.labels  # the lab's attribute names
