"""The lab's folder layout: ``<folder>/data/<name>.jpeg`` plus four headerless CSVs.

::

    <folder>/
        data/10_left.jpeg, data/10_right.jpeg, ...
        train_img.csv   one image name per row, no extension, NO header row
        train_label.csv one grade 0-4 per row, same order
        test_img.csv, test_label.csv

The lab's skeleton read these with ``pd.read_csv(path)``, which takes the first row
for a header and silently drops one image per split (hence the famous 28,099 /
7,025). Here every row is read (``header=None``), and each problem names the file
and the 1-based row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retino import NUM_CLASS

MODES = ("train", "test")
IMAGE_FOLDER = "data"
IMAGE_SUFFIX = ".jpeg"


class DataError(ValueError):
    """The data on disk is not what the pipeline can use; the message says where."""


@dataclass(frozen=True)
class Split:
    """Image names and grades of one split, in CSV order."""

    names: list[str]
    labels: np.ndarray  # int64, values 0..NUM_CLASS-1

    def __len__(self) -> int:
        return len(self.names)


def csv_paths(folder: str | Path, mode: str) -> tuple[Path, Path]:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose train or test")
    folder = Path(folder)
    return folder / f"{mode}_img.csv", folder / f"{mode}_label.csv"


def image_path(image_folder: str | Path, name: str) -> Path:
    """Where the lab layout keeps image ``name`` (no stray space before ``.jpeg``)."""
    return Path(image_folder) / f"{name}{IMAGE_SUFFIX}"


def patient_of(name: str) -> str:
    """``'10_left'`` -> ``'10'``: both eyes of a patient share the prefix."""
    return name.rsplit("_", 1)[0]


def _read_column(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not path.read_bytes().strip():
        return []
    frame = pd.read_csv(path, header=None, dtype=str, skip_blank_lines=False,
                        keep_default_na=False)
    if frame.shape[1] != 1:
        raise DataError(f"{path}: expected one column per row, found {frame.shape[1]}")
    return [value.strip() for value in frame[0].tolist()]


def _check_names(path: Path, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for row, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path} row {row}: empty image name")
        if "/" in name or "\\" in name or name.startswith("."):
            raise DataError(f"{path} row {row}: image name {name!r} points outside the "
                            "data folder; names are plain file stems like 10_left")
        if name in seen:
            raise DataError(f"{path} row {row}: duplicate image name {name!r} "
                            f"(first at row {seen[name]})")
        seen[name] = row


def _parse_labels(path: Path, values: list[str]) -> np.ndarray:
    labels = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values, start=1):
        if not value.isdigit() or int(value) >= NUM_CLASS:
            raise DataError(f"{path} row {row}: label {value!r} is not a grade; "
                            f"allowed: integers 0-{NUM_CLASS - 1}")
        labels[row - 1] = int(value)
    return labels


def read_split(folder: str | Path, mode: str) -> Split:
    """Read every row of ``<mode>_img.csv`` and ``<mode>_label.csv`` under ``folder``."""
    img_csv, label_csv = csv_paths(folder, mode)
    names = _read_column(img_csv)
    values = _read_column(label_csv)
    if len(names) != len(values):
        raise DataError(f"{img_csv} has {len(names)} rows but {label_csv} has "
                        f"{len(values)}; they must pair up row by row")
    if not names:
        raise DataError(f"{img_csv}: the {mode} split is empty")
    _check_names(img_csv, names)
    return Split(names=names, labels=_parse_labels(label_csv, values))


def write_split(folder: str | Path, mode: str, split: Split) -> None:
    """Write a split as the lab's two headerless CSVs."""
    img_csv, label_csv = csv_paths(folder, mode)
    img_csv.write_text("".join(f"{n}\n" for n in split.names), encoding="utf-8")
    label_csv.write_text("".join(f"{int(v)}\n" for v in split.labels), encoding="utf-8")


def read_layout(folder: str | Path) -> dict[str, Split]:
    """Both splits of a lab-layout folder, checked for names shared across splits."""
    splits = {mode: read_split(folder, mode) for mode in MODES}
    shared = set(splits["train"].names) & set(splits["test"].names)
    if shared:
        example = sorted(shared)[0]
        raise DataError(f"{folder}: {len(shared)} image name(s) are in both train and "
                        f"test CSVs, e.g. {example!r}")
    return splits
