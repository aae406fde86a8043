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

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from retino.data.checks import Problem, stop_on
from retino.errors import DataError
from retino.grading import NUM_CLASS

MODES = ("train", "test")
# EyePACS names a photo <patient>_<left|right>; patient-level splits depend on it
EYE_NAME = re.compile(r".+_(left|right)")
IMAGE_FOLDER = "data"
IMAGE_SUFFIX = ".jpeg"


@dataclass(frozen=True)
class Split:
    """Image names and grades of one split, in CSV order."""

    names: list[str]
    labels: np.ndarray  # int64, values 0..NUM_CLASS-1

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: np.ndarray) -> "Split":
        indices = np.asarray(indices, dtype=np.int64)
        return Split([self.names[i] for i in indices], self.labels[indices])

    @staticmethod
    def joined(splits: Sequence["Split"]) -> "Split":
        """The rows of ``splits``, one after the other."""
        return Split([name for split in splits for name in split.names],
                     np.concatenate([split.labels for split in splits]).astype(np.int64))


def csv_paths(folder: str | Path, mode: str) -> tuple[Path, Path]:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose train or test")
    folder = Path(folder)
    return folder / f"{mode}_img.csv", folder / f"{mode}_label.csv"


def image_path(image_folder: str | Path, name: str) -> Path:
    """Where the lab layout keeps image ``name`` (no stray space before ``.jpeg``)."""
    return Path(image_folder) / f"{name}{IMAGE_SUFFIX}"


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


def check_rows(names: list[str], values: list[str], name_file: Path, label_file: Path,
               row_numbers: Sequence[int] | None = None, eye_names: bool = True
               ) -> tuple[Split, list[Problem]]:
    """The usable (name, grade) rows, and a ``Problem`` for every other row.

    A row is unusable when its name is empty, points outside the image folder, is
    not ``<patient>_<left|right>`` (with ``eye_names``: the EyePACS sources, whose
    patient-level splits need it) or repeats an earlier row, or when its label is
    not an integer grade 0-4.
    ``row_numbers`` are the rows' numbers in the file (default 1, 2, ...).
    """
    row_numbers = row_numbers or range(1, len(names) + 1)
    seen: dict[str, int] = {}
    kept_names, kept_labels, problems = [], [], []
    for row, name, value in zip(row_numbers, names, values):
        if not name:
            problems.append(Problem(str(name_file), row, "empty image name"))
        elif "/" in name or "\\" in name or name.startswith("."):
            problems.append(Problem(str(name_file), row, f"image name {name!r} points outside "
                                    "the image folder; names are plain file stems like 10_left"))
        elif eye_names and not EYE_NAME.fullmatch(name):
            problems.append(Problem(str(name_file), row, f"image name {name!r} is not "
                                    "<patient>_<left|right> (like 10_left); patient-level "
                                    "splits and the leakage count need the patient in it"))
        elif name in seen:
            problems.append(Problem(str(name_file), row, f"duplicate image name {name!r} "
                                    f"(first at row {seen[name]})"))
        elif not value.isdigit() or int(value) >= NUM_CLASS:
            problems.append(Problem(str(label_file), row, f"label {value!r} is not a grade; "
                                    f"allowed: integers 0-{NUM_CLASS - 1}"))
        else:
            kept_names.append(name)
            kept_labels.append(int(value))
        seen.setdefault(name, row)
    return Split(kept_names, np.array(kept_labels, dtype=np.int64)), problems


def read_split_rows(folder: str | Path, mode: str, eye_names: bool = True
                    ) -> tuple[Split, list[Problem]]:
    """Every row of ``<mode>_img.csv``/``<mode>_label.csv``: usable rows and problems.

    CSVs that cannot pair up row by row, or a split with no rows, are errors. Without
    ``eye_names``, any plain file stem is a name (the downscaled set of any source).
    """
    img_csv, label_csv = csv_paths(folder, mode)
    names = _read_column(img_csv)
    values = _read_column(label_csv)
    if len(names) != len(values):
        raise DataError(f"{img_csv} has {len(names)} rows but {label_csv} has "
                        f"{len(values)}; they must pair up row by row")
    if not names:
        raise DataError(f"{img_csv}: the {mode} split is empty")
    return check_rows(names, values, img_csv, label_csv, eye_names=eye_names)


def read_split(folder: str | Path, mode: str, eye_names: bool = True) -> Split:
    """Read every row of ``<mode>_img.csv`` and ``<mode>_label.csv``; any bad row is an
    error. ``eye_names``: as in ``check_rows`` (False for the downscaled set)."""
    split, problems = read_split_rows(folder, mode, eye_names)
    stop_on(problems, "stop")
    return split


def write_split(folder: str | Path, mode: str, split: Split) -> None:
    """Write a split as the lab's two headerless CSVs."""
    img_csv, label_csv = csv_paths(folder, mode)
    img_csv.write_text("".join(f"{n}\n" for n in split.names), encoding="utf-8")
    label_csv.write_text("".join(f"{int(v)}\n" for v in split.labels), encoding="utf-8")


def drop_shared_names(splits: dict[str, Split], folder: str | Path
                      ) -> tuple[dict[str, Split], list[Problem]]:
    """Test rows whose image is also listed for train are problems (and left out)."""
    train = set(splits["train"].names)
    test = splits["test"]
    shared = [i for i, name in enumerate(test.names) if name in train]
    if not shared:
        return splits, []
    img_csv = csv_paths(folder, "test")[0]
    problems = [Problem(str(img_csv), None, f"image {test.names[i]!r} is also in the train "
                        "CSVs; an image belongs to one split") for i in shared]
    keep = np.setdiff1d(np.arange(len(test)), shared)
    return {**splits, "test": test.subset(keep)}, problems


def read_layout_rows(folder: str | Path, eye_names: bool = True
                     ) -> tuple[dict[str, Split], list[Problem]]:
    """Both splits of a lab-layout folder: usable rows and every problem found."""
    splits, problems = {}, []
    for mode in MODES:
        splits[mode], found = read_split_rows(folder, mode, eye_names)
        problems += found
    splits, shared = drop_shared_names(splits, folder)
    return splits, problems + shared


def read_layout(folder: str | Path, eye_names: bool = True) -> dict[str, Split]:
    """Both splits of a lab-layout folder; any bad row is an error. ``eye_names``: as
    in ``check_rows`` (False for the downscaled set, whose names come from any source)."""
    splits, problems = read_layout_rows(folder, eye_names)
    stop_on(problems, "stop")
    return splits
