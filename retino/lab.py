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

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from retino.atomic import write_json
from retino.data.layout import IMAGE_FOLDER, csv_paths, image_path, read_split
from retino.data.photos import downscale_pixels
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
    """Named images of one folder with their grades, decoded on access; with ``size``,
    each photo is cropped to the eye, padded square and resized as the pipeline's
    downscale stages do it."""

    def __init__(self, image_folder: str | Path, names: Sequence[str], labels: np.ndarray,
                 transform: transforms.Compose, size: int | None = None):
        self.image_folder = Path(image_folder)
        self.names = list(names)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rgb = served_photo(image_path(self.image_folder, self.names[index]), self.size)
        return self.transform(rgb), int(self.labels[index])

    @staticmethod
    def from_split(folder: str | Path, mode: str, transform: transforms.Compose,
                   size: int | None = None) -> "FundusImages":
        """Every image listed in ``mode``'s CSVs of the lab-layout ``folder``."""
        split = read_split(folder, mode)
        return FundusImages(Path(folder) / IMAGE_FOLDER, split.names, split.labels,
                            transform, size)


def served_photo(path: Path, size: int | None) -> Image.Image:
    """A photo as the lab loader serves it: as it is (``size`` None), or its eye cropped,
    padded to a square and resized to ``size`` px (``retino.data.photos``)."""
    if size is None:
        return _open_rgb(path)
    pixels = downscale_pixels(path, size)
    return Image.fromarray(pixels)


class RetinopathyLoader(FundusImages):
    """The lab's dataset, with its known bugs fixed, on any photos.

    ``RetinopathyLoader(img_path, mode)`` as in the lab (``root=`` as the lab's templates
    name it works too): ``img_path`` is the photo folder, the four CSVs sit in the folder
    above it. Differences from the lab's skeleton:

    * every CSV row is read (``header=None``); ``pd.read_csv`` without it ate the
      first row of each split, leaving the famous 28,099 / 7,025;
    * the path is ``<img_path>/<name>.jpeg``; the skeleton's ``' .jpeg'`` added a space;
    * ``ToTensor`` runs before ``Normalize``, which needs a tensor;
    * random flips only in ``mode='train'``; the test split is never augmented;
    * photos of any size: ``size=512`` crops each to the eye, pads it square and
      resizes it (the pipeline's own preparation), so that a batch stacks; without
      ``size`` the photos are served as they are, which needs them all square and of
      one size (the lab's 512 px copies), else a clear error names ``size``;
    * normalisation uses exact train statistics *of the images it serves*: ``mean`` /
      ``std`` when given; else ``stats_file`` when given (one that
      ``write_photo_statistics`` wrote for these photos); else the file the loader
      keeps beside the photos (``STATISTICS_FILE``, reused while it still describes
      the same photos at the same size, written again when it does not). Never
      ``metrics/data_stats.json``: it describes the pipeline's arrays.
    """

    def __init__(self, img_path: str | Path | None = None, mode: str | None = None,
                 size: int | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, stats_file: str | Path | None = None,
                 *, root: str | Path | None = None):
        img_path = Path(_photo_folder(img_path, root))
        if mode not in ("train", "test"):
            raise ValueError(f"unknown mode {mode!r}: choose mode='train' or mode='test'")
        if size is not None and not (isinstance(size, int) and size >= 32):
            raise ValueError(f"size={size!r}: give a whole number of pixels, 32 or more "
                             "(the lab used 512)")
        split = _lab_split(img_path, mode)
        size_checked = size if size is not None else _own_size(img_path, split.names)
        if mean is None or std is None:
            mean, std = _normalisation(img_path, stats_file, size)
        super().__init__(img_path, split.names, split.labels, image_transform(mode, mean, std),
                         size)
        self.mode, self.image_size = mode, size_checked
        self.img_name, self.label = self.names, self.labels  # the lab's attribute names


def _photo_folder(img_path: str | Path | None, root: str | Path | None) -> str | Path:
    """The photo folder, given as ``img_path`` (the lab's name) or ``root`` (its
    templates'), not both."""
    if img_path is not None and root is not None:
        raise TypeError("give the photo folder once: img_path= or root=, not both")
    if img_path is None and root is None:
        raise TypeError("RetinopathyLoader needs the photo folder: "
                        "RetinopathyLoader(img_path='data', mode='train')")
    return img_path if img_path is not None else root


def _lab_split(img_path: Path, mode: str):
    """The split's rows from the CSVs above ``img_path``; a missing CSV says where it
    looked and why there."""
    for csv in csv_paths(img_path.parent, mode):
        if not csv.is_file():
            raise DataError(f"{csv.resolve()}: not found. The lab's layout keeps "
                            f"{mode}_img.csv and {mode}_label.csv in the folder above the "
                            f"photo folder img_path={str(img_path)!r}, i.e. in "
                            f"{img_path.parent.resolve()}; pass the photo folder itself "
                            "(e.g. img_path='data/lab/data')")
    return read_split(img_path.parent, mode)


def _own_size(img_path: Path, names: Sequence[str]) -> int:
    """The side of the photos when they are all square and of one size (every photo's
    header is read, not its pixels); else a clear error that names ``size``."""
    sizes: dict[tuple[int, int], str] = {}
    for name in names:
        path = image_path(img_path, name)
        try:
            with Image.open(path) as image:
                sizes.setdefault(image.size, name)
        except OSError as error:
            raise DataError(f"{path}: cannot read image ({error})") from None
        width, height = next(iter(sizes))
        if len(sizes) > 1 or width != height:
            shown = ", ".join(f"{n} is {w}x{h}" for (w, h), n in sizes.items())
            raise DataError(f"{img_path}: the photos are not all square and of one size "
                            f"({shown}), so a batch cannot stack them: pass size= (e.g. "
                            "RetinopathyLoader(img_path, mode, size=512)) to crop each to the "
                            "eye, pad it square and resize it, as the pipeline does")
    return next(iter(sizes))[0]


_computed_statistics: dict[tuple, tuple] = {}
PHOTO_STATISTICS = "photos as RetinopathyLoader serves them"  # what such a file describes
STATISTICS_FILE = "retino_photo_statistics.json"  # beside the CSVs, above the photo folder


def _normalisation(img_path: Path, stats_file: str | Path | None, size: int | None) -> tuple:
    """(mean, std) from ``stats_file`` (when it describes these photos), else from the
    file kept beside them, else computed from the images themselves."""
    if stats_file is None:
        return train_statistics(img_path, size)
    return read_photo_statistics(Path(stats_file), img_path, size)


def read_photo_statistics(stats_file: Path, img_path: Path, size: int | None = None) -> tuple:
    """(mean, std) of a file ``write_photo_statistics`` wrote for ``img_path`` at ``size``;
    any other file (compute-stats' describes the pipeline's arrays) is refused, saying
    why."""
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
    if document.get("size") != size:
        raise DataError(f"{stats_file}: describes the photos served at size="
                        f"{document.get('size')}, not at size={size}; write it again with "
                        f"write_photo_statistics(img_path, stats_file, size={size})")
    return tuple(document["mean"]), tuple(document["std"])


def write_photo_statistics(img_path: str | Path, stats_file: str | Path,
                           size: int | None = None) -> None:
    """Write the exact train mean/std of the photos in ``img_path`` as the loader serves
    them at ``size`` (``train_statistics``) to ``stats_file``, marked as describing them,
    for ``RetinopathyLoader(stats_file=)``."""
    img_path = Path(img_path)
    mean, std = train_statistics(img_path, size)
    signature = photos_signature(img_path, read_split(img_path.parent, "train").names)
    write_json(stats_file, _statistics_document(img_path, size, mean, std, signature))


def _statistics_document(img_path: Path, size: int | None, mean: tuple, std: tuple,
                         signature: str) -> dict:
    return {"describes": PHOTO_STATISTICS, "folder": str(img_path.resolve()), "size": size,
            "photos": signature, "mean": list(mean), "std": list(std)}


def photos_signature(img_path: Path, names: Sequence[str]) -> str:
    """What identifies the train photos ``names`` of ``img_path`` without reading their
    pixels: a digest of the train CSVs and of every listed photo's name, byte size and
    modification time (a photo replaced, added or removed changes it)."""
    digest = hashlib.sha256()
    for csv in csv_paths(img_path.parent, "train"):
        digest.update(csv.read_bytes())
    for name in names:
        path = image_path(img_path, name)
        stat = path.stat() if path.is_file() else None
        digest.update(f"{name}:{stat.st_size if stat else -1}:"
                      f"{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()


def train_statistics(img_path: str | Path, size: int | None = None
                     ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std (0..1 scale) of the photos ``train_img.csv`` lists, as
    the loader serves them at ``size``: from the file kept beside them
    (``STATISTICS_FILE``) while it describes the same photos at the same size, else
    computed (every photo decoded once) and kept there for the next process."""
    img_path = Path(img_path)
    names = read_split(img_path.parent, "train").names
    signature = photos_signature(img_path, names)
    key = (str(img_path.resolve()), size, signature)
    if key not in _computed_statistics:
        kept = img_path.parent / STATISTICS_FILE
        _computed_statistics[key] = (_kept_statistics(kept, img_path, size, signature)
                                     or _compute_and_keep(img_path, names, size, kept,
                                                          signature))
    return _computed_statistics[key]


def _kept_statistics(kept: Path, img_path: Path, size: int | None, signature: str
                     ) -> tuple | None:
    """(mean, std) of the kept file when it describes these photos at ``size``."""
    if not kept.is_file():
        return None
    document = json.loads(kept.read_text(encoding="utf-8"))
    if (document.get("folder"), document.get("size"), document.get("photos")) != \
            (str(img_path.resolve()), size, signature):
        console.print(f"{kept} describes other photos or another size: computing the "
                      "statistics again")
        return None
    return tuple(document["mean"]), tuple(document["std"])


def _compute_and_keep(img_path: Path, names: Sequence[str], size: int | None, kept: Path,
                      signature: str) -> tuple:
    train_csv = csv_paths(img_path.parent, "train")[0]
    console.print(f"computing the exact train mean/std of the {len(names)} photos "
                  f"{train_csv} lists, as this loader serves them (kept in {kept})")
    with counting("train statistics", len(names)) as tick:
        moments = channel_moments((np.asarray(served_photo(image_path(img_path, name),
                                                           size))[None]
                                   for name in names), tick)
    mean, std = (tuple(map(float, values)) for values in moments.mean_std())
    try:
        write_json(kept, _statistics_document(img_path, size, mean, std, signature))
    except OSError as error:
        console.print(f"[yellow]could not keep the statistics in {kept} ({error.strerror}); "
                      "a new process computes them again[/]")
    return mean, std


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
