"""The lab-compatible face of retino: the lab's names, working, with its bugs fixed.

Users arrive with the lab's skeleton in mind; these calls keep it working::

    from retino.lab import RetinopathyLoader, ResNet18, ResNet50, evaluate

    train_set = RetinopathyLoader(img_path="data", mode="train")
    model = ResNet50(num_class=5, pretrained=True)
    confusion_matrix, acc = evaluate(model, loader, device, num_class=5)

``RetinopathyLoader`` decodes a JPEG in ``__getitem__``, as the lab did. The
pipeline itself decodes each photo once in downscale-images and trains from uint8
arrays (``retino.train.inputs``); ``bench/run.py`` measures the two against each
other. Nothing in the pipeline imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from retino.data.layout import IMAGE_FOLDER, csv_paths, image_path, read_split
from retino.atomic import write_json
from retino.data.stats import channel_moments
from retino.errors import DataError
from retino.grading import NUM_CLASS, accuracy_percent, confusion_counts, row_normalised
from retino.progress import console, counting
from retino.train.loop import predict_logits
from retino.train.models import build_model


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
        rgb = _open_rgb(image_path(self.image_folder, self.names[index]))
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
    * normalisation uses exact train statistics *of the images it serves* (decoded as
      they are, not cropped or resized): ``mean``/``std`` when given, else a statistics
      file that records that it describes these photos (``stats_file``, as
      ``write_photo_statistics`` writes one), else computed here from the images the
      train CSV lists (decoded once, summed exactly, remembered for the next call).
      ``metrics/data_stats.json`` is never used: it describes the pipeline's cropped,
      padded, resized (perhaps Graham-preprocessed) arrays, not these photos.
    """

    def __init__(self, img_path: str | Path, mode: str, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, stats_file: str | Path | None = None):
        if mode not in ("train", "test"):
            raise ValueError(f"unknown mode {mode!r}: choose train or test")
        if mean is None or std is None:
            mean, std = _normalisation(Path(img_path), stats_file)
        split = read_split(Path(img_path).parent, mode)
        super().__init__(img_path, split.names, split.labels, image_transform(mode, mean, std))
        self.mode = mode
        self.img_name, self.label = self.names, self.labels  # the lab's attribute names


_computed_statistics: dict[tuple, tuple] = {}
PHOTO_STATISTICS = "photos as RetinopathyLoader serves them"  # what such a file describes


def _normalisation(img_path: Path, stats_file: str | Path | None) -> tuple:
    """(mean, std) from ``stats_file`` (when it describes these photos), else computed
    from the images themselves."""
    if stats_file is None:
        return train_statistics(img_path)
    return read_photo_statistics(Path(stats_file), img_path)


def read_photo_statistics(stats_file: Path, img_path: Path) -> tuple:
    """(mean, std) of a file ``write_photo_statistics`` wrote for ``img_path``; any other
    file (compute-stats' describes the pipeline's arrays) is refused, saying why."""
    if not stats_file.is_file():
        raise FileNotFoundError(f"{stats_file}: not found; write one with "
                                "retino.lab.write_photo_statistics(img_path, stats_file), "
                                "pass mean= and std=, or leave stats_file out")
    document = json.loads(stats_file.read_text(encoding="utf-8"))
    folder = str(img_path.resolve())
    if document.get("describes") != PHOTO_STATISTICS or document.get("folder") != folder:
        what = (f"{document['describes']} of {document.get('folder')}"
                if "describes" in document else
                "the pipeline's cropped, padded and resized arrays (compute-stats)")
        raise DataError(f"{stats_file}: describes {what}, not the photos of {folder} that "
                        "RetinopathyLoader serves; normalising with it would shift every "
                        "input. Leave stats_file out (the loader computes the statistics of "
                        "its photos), or pass mean= and std=")
    return tuple(document["mean"]), tuple(document["std"])


def write_photo_statistics(img_path: str | Path, stats_file: str | Path) -> None:
    """Write the exact train mean/std of the photos in ``img_path`` (``train_statistics``)
    to ``stats_file``, marked as describing them, for ``RetinopathyLoader(stats_file=)``."""
    mean, std = train_statistics(img_path)
    write_json(stats_file, {"describes": PHOTO_STATISTICS,
                            "folder": str(Path(img_path).resolve()),
                            "mean": list(mean), "std": list(std)})


def train_statistics(img_path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std (0..1 scale) of the images ``train_img.csv`` lists,
    as this loader decodes them; computed once per folder and CSV version."""
    img_path = Path(img_path)
    train_csv = csv_paths(img_path.parent, "train")[0]
    key = (str(img_path.resolve()), train_csv.stat().st_mtime_ns if train_csv.is_file() else 0)
    if key not in _computed_statistics:
        split = read_split(img_path.parent, "train")
        console.print(f"computing the exact train mean/std of the {len(split)} photos "
                      f"{train_csv} lists, as this loader serves them (once per folder)")
        with counting("train statistics", len(split)) as tick:
            moments = channel_moments((np.asarray(_open_rgb(image_path(img_path, name)))[None]
                                       for name in split.names), tick)
        mean, std = moments.mean_std()
        _computed_statistics[key] = (tuple(map(float, mean)), tuple(map(float, std)))
    return _computed_statistics[key]


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (FileNotFoundError, OSError) as error:
        raise DataError(f"{path}: cannot read image ({error})") from None


def ResNet18(num_class: int = NUM_CLASS, pretrained: bool = False) -> nn.Module:  # noqa: N802
    """The lab's constructor: torchvision ResNet-18, 5-way fc."""
    return build_model("resnet18", pretrained, num_class)


def ResNet50(num_class: int = NUM_CLASS, pretrained: bool = False) -> nn.Module:  # noqa: N802
    """The lab's constructor: torchvision ResNet-50, 5-way fc."""
    return build_model("resnet50", pretrained, num_class)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str,
             num_class: int = NUM_CLASS) -> tuple[np.ndarray, float]:
    """The lab's call: (row-normalised num_class x num_class confusion matrix, accuracy %).

    Rows are the true grades and each sums to 1 (a grade absent from ``loader``
    leaves a row of zeros).
    """
    device = torch.device(device)
    model.to(device)
    actual, logits = predict_logits(model, loader, device)
    predicted = logits.argmax(axis=1)
    counts = confusion_counts(actual, predicted, num_class)
    return row_normalised(counts), accuracy_percent(actual, predicted)
