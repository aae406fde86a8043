"""The lab's folder layout: ``<folder>/data/<name>.jpeg`` plus four headerless CSVs.

::

    <folder>/
        data/10_left.jpeg, data/10_right.jpeg, ...
        train_img.csv   one image name per row, no extension, NO header row
        train_label.csv one grade 0-4 per row, same order
        test_img.csv, test_label.csv
        val_img.csv, val_label.csv      optional: the user's own validation split

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

MODES = ("train", "test")  # the splits every set has
VALIDATION = "val"  # a split a set may bring: the user's own validation images
SPLIT_ORDER = ("train", VALIDATION, "test")  # how sets list and write their splits
EXTERNAL_MODE = "test"  # an external set is written as one split, read as a test split
# EyePACS names a photo <patient>_<left|right>; patient-level splits depend on it
EYE_NAME = re.compile(r".+_(left|right)")
QUALIFIER = ":"  # a set that restarts its numbering per split: <split>:<name>
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


def plain_name(name: str) -> str:
    """A photo's name without the split that a set with repeated numbers puts before it
    (``test:IDRiD_001`` -> ``IDRiD_001``; see ``retino.data.public_sets``)."""
    return name.rpartition(QUALIFIER)[2]


def csv_paths(folder: str | Path, mode: str) -> tuple[Path, Path]:
    if mode not in SPLIT_ORDER:
        raise ValueError(f"unknown mode {mode!r}: choose train, val or test")
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


INTEGRAL = re.compile(r"\d+(\.0+)?")  # 2, or 2.0 as a column with a gap is exported


def grade_of(cell: str) -> int | None:
    """The grade a label cell holds: an integer 0-4, written ``2`` or as the integral
    float ``2.0`` (pandas writes a whole column so when one cell of it is empty);
    None for anything else (``2.5``, ``x``, ``-1``, ``7``)."""
    if not INTEGRAL.fullmatch(cell):
        return None
    grade = int(float(cell))
    return grade if grade < NUM_CLASS else None


def check_rows(names: list[str], values: list[str], name_file: Path, label_file: Path,
               row_numbers: Sequence[int] | None = None, eye_names: bool = True
               ) -> tuple[Split, list[Problem]]:
    """The usable (name, grade) rows, and a ``Problem`` for every other row.

    A row is unusable when its name is empty, points outside the image folder, is
    not ``<patient>_<left|right>`` (with ``eye_names``: the EyePACS sources, whose
    patient-level splits need it) or repeats an earlier row, or when its label is
    not a grade 0-4 (``grade_of``).
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
        elif (grade := grade_of(value)) is None:
            problems.append(Problem(str(label_file), row, f"label {value!r} is not a grade; "
                                    f"allowed: integers 0-{NUM_CLASS - 1}"))
        else:
            kept_names.append(name)
            kept_labels.append(grade)
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
    """Rows whose image an earlier split (in ``SPLIT_ORDER``) already lists are problems
    (and left out): an image belongs to one split."""
    kept, problems, earlier = {}, [], {}
    for mode in [m for m in SPLIT_ORDER if m in splits]:
        split = splits[mode]
        shared = [i for i, name in enumerate(split.names) if name in earlier]
        img_csv = csv_paths(folder, mode)[0]
        problems += [Problem(str(img_csv), None, f"image {split.names[i]!r} is also in the "
                             f"{earlier[split.names[i]]} CSVs; an image belongs to one split")
                     for i in shared]
        kept[mode] = split.subset(np.setdiff1d(np.arange(len(split)), shared))
        earlier.update((name, mode) for name in split.names if name not in earlier)
    return kept, problems


def given_modes(folder: str | Path) -> tuple[str, ...]:
    """The splits a lab-layout folder lists: train and test, and val where its two CSVs
    are there."""
    has_validation = all(path.is_file() for path in csv_paths(folder, VALIDATION))
    return tuple(m for m in SPLIT_ORDER if m in MODES or has_validation)


def read_layout_rows(folder: str | Path, eye_names: bool = True
                     ) -> tuple[dict[str, Split], list[Problem]]:
    """Every split of a lab-layout folder: usable rows and every problem found."""
    splits, problems = {}, []
    for mode in given_modes(folder):
        splits[mode], found = read_split_rows(folder, mode, eye_names)
        problems += found
    splits, shared = drop_shared_names(splits, folder)
    return splits, problems + shared


def read_layout(folder: str | Path, eye_names: bool = True) -> dict[str, Split]:
    """Every split of a lab-layout folder (train, test, and val where given); any bad
    row is an error. ``eye_names``: as
    in ``check_rows`` (False for the downscaled set, whose names come from any source)."""
    splits, problems = read_layout_rows(folder, eye_names)
    stop_on(problems, "stop")
    return splits
